"""Phones -> viseme targets -> smooth mouth parameters (coarticulation), modulated by loudness.

Each ARPAbet phone has a target for every mouth parameter (`real3d.motion.mouth.MOUTH_PARAMS`) and a
dominance per parameter. Coarticulation follows the dominance-function model (Cohen & Massaro 1993):
every phone's dominance is flat inside its segment and decays exponentially before it (anticipation)
and after it (carry-over); a parameter's value at time t is the dominance-weighted mean of all targets.
Bilabial closure and labiodental contact have a high dominance, so they are reached even in short
segments, while e.g. /h/ barely constrains the jaw and takes the shape of its neighbours. The result is
continuous (no step changes) and then lightly smoothed.

The level of the 1-3 kHz band (relative to the speech's own level; the band whose envelope follows the
mouth opening best) scales the jaw, and the mouth closes when the audio is silent: below `close_db` the
lips are pressed together whatever the recognizer said. Sound without syllabic rhythm (music, a hum,
a held note: the band level stays within a few dB for over a second) is treated like silence; the
recognizer labels such sound as long vowels. `mouth_amp` scales every shape parameter; the official
default 0.45 is our neutral 1.0x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

from real3d.audio.features import DB_FLOOR, HOP_S, above_noise_floor_db, modulation_depth, speech_level
from real3d.audio.phones import NOISE_SPEECH, SILENCE, Phone
from real3d.motion.mouth import JAW, LABIODENTAL, MOUTH_PARAMS, PRESS, ROUND, SPREAD

OFFICIAL_MOUTH_AMP = 0.45
"""The official `--mouth_amp` default; it maps to our neutral amplitude (1.0x)."""

# target (jaw, spread, round, press, labiodental) per phone
_T = {
    "AA": (1.00, 0.10, 0.00, 0, 0), "AE": (0.85, 0.45, 0.00, 0, 0), "AH": (0.65, 0.15, 0.00, 0, 0),
    "AO": (0.85, 0.00, 0.45, 0, 0), "AW": (0.85, 0.05, 0.35, 0, 0), "AY": (0.85, 0.25, 0.00, 0, 0),
    "EH": (0.65, 0.45, 0.00, 0, 0), "ER": (0.40, 0.00, 0.45, 0, 0), "EY": (0.55, 0.55, 0.00, 0, 0),
    "IH": (0.45, 0.50, 0.00, 0, 0), "IY": (0.30, 0.80, 0.00, 0, 0), "OW": (0.60, 0.00, 0.80, 0, 0),
    "OY": (0.65, 0.05, 0.65, 0, 0), "UH": (0.45, 0.00, 0.60, 0, 0), "UW": (0.30, 0.00, 1.00, 0, 0),
    "B": (0.05, 0.00, 0.00, 1, 0), "P": (0.05, 0.00, 0.00, 1, 0), "M": (0.05, 0.00, 0.00, 1, 0),
    "F": (0.15, 0.10, 0.00, 0, 1), "V": (0.15, 0.10, 0.00, 0, 1),
    "TH": (0.25, 0.20, 0.00, 0, 0), "DH": (0.25, 0.20, 0.00, 0, 0),
    "T": (0.25, 0.25, 0.00, 0, 0), "D": (0.25, 0.25, 0.00, 0, 0), "N": (0.25, 0.25, 0.00, 0, 0),
    "L": (0.35, 0.20, 0.00, 0, 0), "S": (0.12, 0.55, 0.00, 0, 0), "Z": (0.12, 0.55, 0.00, 0, 0),
    "SH": (0.20, 0.00, 0.60, 0, 0), "ZH": (0.20, 0.00, 0.60, 0, 0), "CH": (0.20, 0.00, 0.55, 0, 0),
    "JH": (0.20, 0.00, 0.55, 0, 0), "K": (0.35, 0.10, 0.00, 0, 0), "G": (0.35, 0.10, 0.00, 0, 0),
    "NG": (0.35, 0.10, 0.00, 0, 0), "HH": (0.50, 0.10, 0.00, 0, 0), "R": (0.30, 0.00, 0.50, 0, 0),
    "W": (0.20, 0.00, 1.00, 0, 0), "Y": (0.25, 0.60, 0.00, 0, 0),
    NOISE_SPEECH: (0.45, 0.10, 0.00, 0, 0), SILENCE: (0.00, 0.00, 0.00, 1, 0),
}
VISEME_TARGETS: dict[str, np.ndarray] = {k: np.asarray(v, np.float64) for k, v in _T.items()}
"""Target of each mouth parameter (columns as MOUTH_PARAMS) for every phone label."""


def _dominance(phone: str) -> np.ndarray:
    d = np.ones(len(MOUTH_PARAMS))
    if phone in ("P", "B", "M"):
        d[JAW] = 3.0
    elif phone in ("F", "V"):
        d[JAW] = 2.0
    elif phone in ("UW", "OW", "W", "SH", "ZH", "CH", "JH", "R"):
        d[ROUND] = 3.0
    elif phone in ("IY", "S", "Z", "Y", "EY"):
        d[SPREAD] = 2.0
    elif phone == "HH":
        d[:] = 0.15
    elif phone == SILENCE:
        d[:] = 0.6
    return d


VISEME_DOMINANCE: dict[str, np.ndarray] = {k: _dominance(k) for k in VISEME_TARGETS}
"""Dominance (weight inside the segment) of each parameter for every phone label."""


@dataclass(frozen=True)
class VisemeConfig:
    """Coarticulation and loudness-modulation settings."""

    anticipation_s: float = 0.07
    """Time constant of a phone's dominance before its segment (how early the mouth prepares)."""
    carryover_s: float = 0.05
    """Time constant of a phone's dominance after its segment."""
    round_anticipation_s: float = 0.14
    """Rounding anticipates longer (protrusion starts well before /uw/, /w/)."""
    reach_s: float = 0.4
    """Dominance is ignored beyond this distance from a segment (speed)."""
    gesture_min_s: float = 0.05
    """Shortest lip closure (p/b/m) or lip-teeth contact (f/v) held, centred on its segment."""
    gesture_onset_s: float = 0.05
    """Time the lips take to close before a p/b/m or f/v segment."""
    gesture_release_s: float = 0.04
    """Time the lips take to release after a p/b/m or f/v segment."""
    smooth_s: float = 0.02
    """Gaussian smoothing (sigma, seconds) applied after blending."""
    close_db: float = -32.0
    """Below this level (dB re the speech level) the lips are fully pressed together."""
    open_db: float = -20.0
    """Above this level (dB re the speech level) silence closure no longer applies."""
    quiet_db: float = -25.0
    """Jaw gain is `min_gain` at this level (dB re the speech level of the articulation band) ..."""
    loud_db: float = -3.0
    """... and 1 at this level and above."""
    min_gain: float = 0.15
    """Jaw gain of very quiet speech."""
    loudness_jaw_weight: float = 0.0
    """Share of the jaw opening that follows the loudness envelope directly (the rest follows the recognised
    phones). Measured at 0.5: d6 lag-0 mouth correlation 0.23 -> 0.30, d10 0.14 -> -0.03 (best lag 0.38 -> 0.26),
    so it stays off by default until more clips with known A/V sync decide."""
    loudness_jaw_open: float = 0.7
    """Jaw opening of the loudness-driven part at full speech level (an open vowel is 1)."""
    steady_db: float = 4.0
    """Sound whose band level varies less than this (dB, 90th - 10th percentile over `modulation_window_s`)
    is steady, not speech: the lips close as in silence ..."""
    rhythmic_db: float = 12.0
    """... and above this it moves fully (speech varies 15-30 dB with its syllables)."""
    modulation_window_s: float = 1.2
    """Window over which the level's range is measured (several syllables)."""
    visual_lead_s: float = 0.0
    """The mouth shows what is heard this much later: visible articulation leads the sound
    (lips close before a /m/ is heard, the jaw opens before a vowel's onset)."""


def amplitude_scale(mouth_amp: float) -> float:
    """Our shape scale for an official-style mouth amplitude (0.45 -> 1.0)."""
    if not np.isfinite(mouth_amp) or mouth_amp < 0:
        raise ValueError(f"mouth_amp must be a non-negative number, got {mouth_amp}")
    return float(mouth_amp) / OFFICIAL_MOUTH_AMP


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


GESTURES = {"P": PRESS, "B": PRESS, "M": PRESS, "F": LABIODENTAL, "V": LABIODENTAL}
"""Phones whose lip contact is a must-reach gesture rather than a blended target."""


def lip_gestures(phones: list[Phone], n_hops: int, config: VisemeConfig | None = None) -> np.ndarray:
    """[n_hops,k] press / labiodental curves: 1 during each p/b/m (f/v) segment (at least gesture_min_s),
    with smooth onset and release ramps; other columns are 0."""
    cfg = config or VisemeConfig()
    out = np.zeros((n_hops, len(MOUTH_PARAMS)))
    t = np.arange(n_hops) * HOP_S
    for ph in phones:
        col = GESTURES.get(ph.phone)
        if col is None:
            continue
        mid, half = 0.5 * (ph.start + ph.end), 0.5 * max(ph.end - ph.start, cfg.gesture_min_s)
        s0, s1 = mid - half, mid + half
        a = max(0, int((s0 - cfg.gesture_onset_s) / HOP_S) - 1)
        b = min(n_hops, int((s1 + cfg.gesture_release_s) / HOP_S) + 2)
        tt = t[a:b]
        up = _smoothstep((tt - (s0 - cfg.gesture_onset_s)) / cfg.gesture_onset_s)
        down = 1.0 - _smoothstep((tt - s1) / cfg.gesture_release_s)
        out[a:b, col] = np.maximum(out[a:b, col], np.minimum(up, down))
    return out


def blend_targets(phones: list[Phone], n_hops: int, config: VisemeConfig | None = None) -> np.ndarray:
    """Dominance-blended viseme parameters [n_hops,k] on the 100 Hz grid (hop h at time h*HOP_S); the
    press and labiodental columns are the must-reach gestures of `lip_gestures`."""
    cfg = config or VisemeConfig()
    k = len(MOUTH_PARAMS)
    num = np.zeros((n_hops, k))
    den = np.full((n_hops, k), 1e-9)
    t = np.arange(n_hops) * HOP_S
    reach = int(np.ceil(cfg.reach_s / HOP_S))
    tau_before = np.full(k, cfg.anticipation_s)
    tau_before[ROUND] = cfg.round_anticipation_s
    for ph in phones:
        target = VISEME_TARGETS.get(ph.phone, VISEME_TARGETS[NOISE_SPEECH])
        dom = VISEME_DOMINANCE.get(ph.phone, VISEME_DOMINANCE[NOISE_SPEECH])
        a = max(0, int(np.floor(ph.start / HOP_S)) - reach)
        b = min(n_hops, int(np.ceil(ph.end / HOP_S)) + reach)
        if b <= a:
            continue
        tt = t[a:b, None]
        before = np.maximum(ph.start - tt, 0.0)
        after = np.maximum(tt - ph.end, 0.0)
        d = dom[None, :] * np.exp(-before / tau_before[None, :] - after / cfg.carryover_s)  # H x k
        num[a:b] += d * target[None, :]
        den[a:b] += d
    out = num / den
    gest = lip_gestures(phones, n_hops, cfg)
    out[:, [PRESS, LABIODENTAL]] = gest[:, [PRESS, LABIODENTAL]]
    return out


def visemes_from_phones(
    phones: list[Phone],
    loudness_db: np.ndarray,
    mouth_amp: float = OFFICIAL_MOUTH_AMP,
    config: VisemeConfig | None = None,
    articulation_db: np.ndarray | None = None,
) -> np.ndarray:
    """Mouth parameters [H,k] at 100 Hz (H = len(loudness_db), the 10 ms loudness curve).

    Jaw = blended jaw target x level gain x speech rhythm x amplitude; the lips close where the audio is
    silent. The level gain and the rhythm gate read `articulation_db` (the 1-3 kHz band level,
    `real3d.audio.features.band_level_db`, same hops) when given, else the broadband loudness.
    """
    cfg = config or VisemeConfig()
    scale = amplitude_scale(mouth_amp)
    loud = np.asarray(loudness_db, np.float64)
    n = len(loud)
    rel = _relative_db(loud)
    params = blend_targets(relabel_loud_silence(phones, rel, cfg.open_db), n, cfg)
    art = above_noise_floor_db(loud if articulation_db is None else np.asarray(articulation_db, np.float64))
    if len(art) != n:
        raise ValueError(f"articulation_db has {len(art)} hops, loudness_db {n}; compute both on the same audio")
    level = _smoothstep((_relative_db(art) - cfg.quiet_db) / (cfg.loud_db - cfg.quiet_db))
    rhythm = speech_rhythm(art, cfg)
    gain = cfg.min_gain + (1.0 - cfg.min_gain) * level
    w = cfg.loudness_jaw_weight
    params[:, JAW] = (1.0 - w) * params[:, JAW] * gain + w * cfg.loudness_jaw_open * level
    params[:, [JAW, SPREAD, ROUND, LABIODENTAL]] *= rhythm[:, None]  # steady sound: no shapes (closed below)
    if cfg.smooth_s > 0 and n > 1:
        shape = [JAW, SPREAD, ROUND]
        params[:, shape] = gaussian_filter1d(params[:, shape], cfg.smooth_s / HOP_S, axis=0, mode="nearest")
    # silence and steady sound close the lips (rhythm under 0.5 starts the closure)
    params[:, PRESS] = np.maximum(params[:, PRESS], np.maximum(quiet_closure(rel, cfg), _smoothstep(1.0 - 2.0 * rhythm)))
    params[:, [JAW, SPREAD, ROUND, LABIODENTAL]] *= scale
    return np.clip(params, 0.0, None)


def _relative_db(level_db: np.ndarray) -> np.ndarray:
    """Level re the speech level (`speech_level`); digital silence and all-silent input give -200."""
    ref = speech_level(level_db)
    if ref <= DB_FLOOR:
        return np.full(len(level_db), -200.0)
    return np.where(level_db > DB_FLOOR, level_db - ref, -200.0)


def speech_rhythm(level_db: np.ndarray, config: VisemeConfig | None = None) -> np.ndarray:
    """[H] in [0,1]: 1 where the 100 Hz level rises and falls like syllables, 0 for steady sound.

    From the level's range over `modulation_window_s` (`modulation_depth`) between `steady_db` and
    `rhythmic_db`, smoothed over 0.1 s. Silence next to speech counts as rhythm (the range is large).
    """
    cfg = config or VisemeConfig()
    v = np.asarray(level_db, np.float64)
    if len(v) == 0:
        return np.zeros(0)
    depth = modulation_depth(np.maximum(v, DB_FLOOR), cfg.modulation_window_s)  # floor-removed levels go lower
    g = _smoothstep((depth - cfg.steady_db) / (cfg.rhythmic_db - cfg.steady_db))
    return gaussian_filter1d(g, 0.1 / HOP_S, mode="nearest") if len(g) > 1 else g


def quiet_closure(rel_db: np.ndarray, config: VisemeConfig | None = None) -> np.ndarray:
    """[H] lip closure from the 100 Hz level re speech: 1 below close_db, 0 above open_db; every quiet
    dip is held for at least `gesture_min_s` (stop closures in speech are 20-100 ms) with smooth edges."""
    cfg = config or VisemeConfig()
    rel = np.asarray(rel_db, np.float64)
    if len(rel) == 0:
        return np.zeros(0)
    q = 1.0 - _smoothstep((rel - cfg.close_db) / (cfg.open_db - cfg.close_db))
    hold = max(1, int(round(cfg.gesture_min_s / HOP_S)))
    q = maximum_filter1d(q, hold + 1, mode="nearest")
    return gaussian_filter1d(q, 0.01 / HOP_S, mode="nearest")


def relabel_loud_silence(phones: list[Phone], rel_db: np.ndarray, open_db: float, min_s: float = 0.03) -> list[Phone]:
    """Phones where silence segments that are loud (rel_db above open_db for >= min_s, i.e. speech the
    recognizer missed) become NOISE_SPEECH (a generic open vowel); rel_db is the 100 Hz level re speech."""
    out: list[Phone] = []
    for ph in phones:
        if ph.phone != SILENCE:
            out.append(ph)
            continue
        a = max(0, int(round(ph.start / HOP_S)))
        b = min(len(rel_db), int(round(ph.end / HOP_S)))
        loud = np.concatenate([[False], rel_db[a:b] > open_db, [False]])
        edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
        cursor = ph.start
        for s0, s1 in zip(edges[::2], edges[1::2]):
            t0, t1 = (a + s0) * HOP_S, (a + s1) * HOP_S
            if t1 - t0 < min_s:
                continue
            if t0 > cursor:
                out.append(Phone(SILENCE, cursor, t0))
            out.append(Phone(NOISE_SPEECH, max(t0, cursor), min(t1, ph.end)))
            cursor = min(t1, ph.end)
        if cursor < ph.end:
            out.append(Phone(SILENCE, cursor, ph.end))
    return out


def sample_at_frames(values: np.ndarray, n_frames: int, fps: float, offset_s: float = 0.0) -> np.ndarray:
    """Linear interpolation of 100 Hz values [H,...] at video frame times i/fps + offset_s -> [n_frames,...]."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return np.zeros((n_frames,) + v.shape[1:], np.float32)
    pos = np.clip((np.arange(n_frames) / fps + offset_s) / HOP_S, 0, len(v) - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(v) - 1)
    w = (pos - i0).reshape((-1,) + (1,) * (v.ndim - 1))
    return ((1 - w) * v[i0] + w * v[i1]).astype(np.float32)
