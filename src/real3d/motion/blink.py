"""Blink schedules: eyelid closure per frame in [0,1].

natural   human statistics: inter-blink intervals of 2-6 s (log-normal, median ~3.5 s), blinks of
          0.1-0.4 s (median ~0.2 s) that close fast (~35 % of the blink) and open slowly, and an
          occasional double blink (~10 %). The apex of each blink lands on a frame, so even the shortest
          blink reaches full closure at 25 fps.
periodic  the official behaviour: a blink starts at every frame i with i % 125 == 0 (5 s at 25 fps; the
          period and length scale with fps), lasting T = randint(8, 12) frames with closure
          4t/T - 4t^2/T^2 at offset t.
none      eyes stay open.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BlinkMode = Literal["natural", "periodic", "none"]

INTERVAL_RANGE_S = (2.0, 6.0)
"""Natural inter-blink interval range (start to start), seconds."""
DURATION_RANGE_S = (0.1, 0.4)
"""Natural blink duration range, seconds."""
DOUBLE_BLINK_P = 0.1
"""Probability that a natural blink is followed at once by a second one."""
OFFICIAL_PERIOD_FRAMES = 125
"""Official blink period in frames at 25 fps."""


def blink_profile(t: np.ndarray, duration: float, close_share: float = 0.35) -> np.ndarray:
    """Closure at times t (seconds from blink start) of one blink of `duration`: a fast smooth close to 1
    at close_share*duration, then a slower smooth opening; 0 outside [0, duration]."""
    t = np.asarray(t, np.float64)
    tc = close_share * duration
    to = duration - tc
    closing = np.sin(0.5 * np.pi * np.clip(t / tc, 0, 1)) ** 2
    opening = 0.5 * (1 + np.cos(np.pi * np.clip((t - tc) / to, 0, 1)))
    out = np.where(t <= tc, closing, opening)
    return np.where((t >= 0) & (t <= duration), out, 0.0)


def _natural(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n_frames, np.float64)
    frames_t = np.arange(n_frames) / fps
    lo_i, hi_i = INTERVAL_RANGE_S
    lo_d, hi_d = DURATION_RANGE_S
    t = rng.uniform(0.3, 2.5)  # first blink start
    while t < n_frames / fps:
        dur = float(np.clip(rng.lognormal(np.log(0.2), 0.3), lo_d, hi_d))
        apex = round((t + 0.35 * dur) * fps) / fps  # the closed instant falls on a frame
        start = apex - 0.35 * dur
        out = np.maximum(out, blink_profile(frames_t - start, dur))
        if rng.random() < DOUBLE_BLINK_P:
            dur2 = float(np.clip(rng.lognormal(np.log(0.16), 0.2), lo_d, hi_d))
            start2 = start + dur + rng.uniform(0.05, 0.15)
            apex2 = round((start2 + 0.35 * dur2) * fps) / fps
            out = np.maximum(out, blink_profile(frames_t - (apex2 - 0.35 * dur2), dur2))
        t = start + float(np.clip(rng.lognormal(np.log(3.5), 0.3), lo_i, hi_i))
    return out


def _periodic(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n_frames, np.float64)
    ratio = fps / 25.0
    period = max(1, int(round(OFFICIAL_PERIOD_FRAMES * ratio)))
    for start in range(0, n_frames, period):
        length = int(round(int(rng.integers(8, 12)) * ratio))
        length = max(length, 2)
        tt = np.arange(length, dtype=np.float64)
        closure = 4 * tt / length - 4 * tt**2 / length**2
        stop = min(n_frames, start + length)
        out[start:stop] = closure[: stop - start]
    return out


def blink_curve(
    n_frames: int, fps: float, mode: BlinkMode = "natural", rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """[n_frames] float32 eyelid closure in [0,1] for the given blink mode (deterministic given rng/seed)."""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if mode == "none":
        out = np.zeros(n_frames)
    elif mode == "natural":
        out = _natural(n_frames, fps, gen)
    elif mode == "periodic":
        out = _periodic(n_frames, fps, gen)
    else:
        raise ValueError(f"unknown blink mode {mode!r}; use 'natural', 'periodic' or 'none'")
    return np.clip(out, 0.0, 1.0).astype(np.float32)
