"""Subtle idle head motion for audio-driven tracks: slow smooth sway plus speech-correlated nods/turns.

Sway: band-limited noise (white noise through a Gaussian low-pass), a couple of degrees at most.
Speech: the loudness envelope minus its slow trend drives small nods (pitch) and a fraction of it small
turns (yaw), so emphasis in the voice shows in the head. Everything is deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d


@dataclass(frozen=True)
class IdleConfig:
    """Amplitudes (standard deviations) and time scales of the idle motion."""

    sway_deg: tuple[float, float, float] = (1.2, 1.8, 0.8)
    """Std of the slow sway of pitch, yaw, roll in degrees."""
    sway_s: float = 0.9
    """Time scale (Gaussian sigma, seconds) of the sway."""
    nod_deg: float = 1.5
    """Pitch (degrees) per unit of speech emphasis (nods; positive = chin down)."""
    turn_deg: float = 0.6
    """Yaw (degrees) per unit of speech emphasis, with a random sign per phrase."""
    emphasis_s: float = 0.12
    """Smoothing (sigma, seconds) of the emphasis signal."""
    translation: tuple[float, float, float] = (0.01, 0.008, 0.006)
    """Std of the x, y shift (canonical units) and of the log-scale."""
    max_deg: float = 5.0
    """Hard bound on every angle (degrees), applied with a soft clip."""


def _band_noise(n: int, sigma_frames: float, rng: np.random.Generator, dims: int) -> np.ndarray:
    """[n,dims] smooth noise with unit std (white noise low-passed, normalized by the filter's gain)."""
    pad = int(4 * sigma_frames) + 1
    white = rng.standard_normal((n + 2 * pad, dims))
    smooth = gaussian_filter1d(white, sigma_frames, axis=0, mode="wrap")[pad : pad + n]
    # std of Gaussian-filtered unit white noise = 1 / sqrt(2 sqrt(pi) sigma)
    return smooth * np.sqrt(2.0 * np.sqrt(np.pi) * max(sigma_frames, 1e-6))


def _soft_clip(x: np.ndarray, bound: float) -> np.ndarray:
    return bound * np.tanh(x / bound)


def idle_motion(
    n_frames: int,
    fps: float,
    emphasis: np.ndarray | None = None,
    seed: int = 0,
    config: IdleConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation [T,3] (pitch, yaw, roll radians) and translation [T,3] of an idle talking head.

    `emphasis` [T] (optional) is a speech-energy curve in [0,1] (e.g. loudness gain per frame); its
    fast part above the slow trend drives nods and turns.
    """
    cfg = config or IdleConfig()
    if n_frames == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    rng = np.random.default_rng(seed)
    sway = _band_noise(n_frames, cfg.sway_s * fps, rng, 3) * np.asarray(cfg.sway_deg)[None, :]
    trans = _band_noise(n_frames, 1.3 * cfg.sway_s * fps, rng, 3) * np.asarray(cfg.translation)[None, :]
    rot_deg = sway
    if emphasis is not None and len(emphasis) == n_frames and n_frames > 1:
        e = np.asarray(emphasis, np.float64)
        trend = gaussian_filter1d(e, 1.0 * fps, mode="nearest")
        emph = gaussian_filter1d(np.maximum(e - trend, 0.0), cfg.emphasis_s * fps, mode="nearest")
        # a random sign for turns that changes slowly (one direction per phrase)
        turn_sign = np.tanh(3.0 * _band_noise(n_frames, 1.5 * fps, rng, 1)[:, 0])
        rot_deg = rot_deg.copy()
        rot_deg[:, 0] += cfg.nod_deg * emph / max(float(emph.std()) * 2.0, 0.25)
        rot_deg[:, 1] += cfg.turn_deg * turn_sign * emph / max(float(emph.std()) * 2.0, 0.25)
    rot = np.deg2rad(_soft_clip(rot_deg, cfg.max_deg))
    return rot.astype(np.float32), trans.astype(np.float32)
