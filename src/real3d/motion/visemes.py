"""Phones -> viseme targets -> smooth mouth parameters (coarticulation), modulated by loudness.

Each ARPAbet phone has a target for every mouth parameter (`real3d.motion.mouth.MOUTH_PARAMS`) and a
dominance per parameter. Coarticulation follows the dominance-function model (Cohen & Massaro 1993):
every phone's dominance is flat inside its segment and decays exponentially before it (anticipation)
and after it (carry-over); a parameter's value at time t is the dominance-weighted mean of all targets.
Bilabial closure and labiodental contact have a high dominance, so they are reached even in short
segments, while e.g. /h/ barely constrains the jaw and takes the shape of its neighbours. The result is
continuous (no step changes) and then lightly smoothed.

The jaw is the phones' blended target plus the spectral balance of the sound (the 1-3 kHz level against the 100-800
Hz level, normalised per speaker: `real3d.audio.features.spectral_openness`), scaled by a gain that grows linearly
with the 1-3 kHz amplitude (from `min_gain` to 1 at the speech level). How far this speaker opens is set afterwards
on the whole curve: the audio driver scales the jaw so that the opening's standard deviation while the person talks
follows the speaker's median voiced F1 (`real3d.motion.from_audio.OPENING_SD`,
`real3d.audio.formants.speaker_scale`, `real3d.motion.mouth.normalise_opening`), which makes the amplitude
independent of the recording level and of how many open vowels the recognizer happened to find. Rounding and
spreading blend the phones' targets with the formant cues (low F2 rounds, high F2 spreads:
`real3d.audio.formants.vowel_cues`), which do not depend on the language. The lips close where the level drops deep
(`close_db`), in pauses of `pause_min_s` or more (whatever the noise floor), at recognised p/b/m, and for sound
without syllabic rhythm (music, a hum, a held note: the band level stays within a few dB for over a second; the
recognizer labels such sound as long vowels). `mouth_amp` scales every shape parameter; the official default 0.45 is
our neutral 1.0x.

Every threshold below was chosen on the nine development clips (six VASA-1 talking portraits, case10, d6, d10;
see docs/evaluation.md) by the mean lag-0 correlation of the mouth opening with the real speaker's, and the
figure of each alternative tried is in its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

from real3d.audio.features import (
    DB_FLOOR,
    HOP_S,
    above_noise_floor_db,
    modulation_depth,
    speech_level,
)
from real3d.audio.formants import VowelCues
from real3d.audio.phones import NOISE_SPEECH, SILENCE, Phone
from real3d.motion.mouth import JAW, LABIODENTAL, MOUTH_PARAMS, PRESS, ROUND, SPREAD
from real3d.ramps import smoothstep

OFFICIAL_MOUTH_AMP = 0.45
"""The official `--mouth_amp` default; it maps to our neutral amplitude (1.0x)."""

# target (jaw, spread, round, press, labiodental) per phone
_T = {
    "AA": (1.00, 0.10, 0.00, 0, 0),
    "AE": (0.85, 0.45, 0.00, 0, 0),
    "AH": (0.65, 0.15, 0.00, 0, 0),
    "AO": (0.85, 0.00, 0.45, 0, 0),
    "AW": (0.85, 0.05, 0.35, 0, 0),
    "AY": (0.85, 0.25, 0.00, 0, 0),
    "EH": (0.65, 0.45, 0.00, 0, 0),
    "ER": (0.40, 0.00, 0.45, 0, 0),
    "EY": (0.55, 0.55, 0.00, 0, 0),
    "IH": (0.45, 0.50, 0.00, 0, 0),
    "IY": (0.30, 0.80, 0.00, 0, 0),
    "OW": (0.60, 0.00, 0.80, 0, 0),
    "OY": (0.65, 0.05, 0.65, 0, 0),
    "UH": (0.45, 0.00, 0.60, 0, 0),
    "UW": (0.30, 0.00, 1.00, 0, 0),
    "B": (0.05, 0.00, 0.00, 1, 0),
    "P": (0.05, 0.00, 0.00, 1, 0),
    "M": (0.05, 0.00, 0.00, 1, 0),
    "F": (0.15, 0.10, 0.00, 0, 1),
    "V": (0.15, 0.10, 0.00, 0, 1),
    "TH": (0.25, 0.20, 0.00, 0, 0),
    "DH": (0.25, 0.20, 0.00, 0, 0),
    "T": (0.25, 0.25, 0.00, 0, 0),
    "D": (0.25, 0.25, 0.00, 0, 0),
    "N": (0.25, 0.25, 0.00, 0, 0),
    "L": (0.35, 0.20, 0.00, 0, 0),
    "S": (0.12, 0.55, 0.00, 0, 0),
    "Z": (0.12, 0.55, 0.00, 0, 0),
    "SH": (0.20, 0.00, 0.60, 0, 0),
    "ZH": (0.20, 0.00, 0.60, 0, 0),
    "CH": (0.20, 0.00, 0.55, 0, 0),
    "JH": (0.20, 0.00, 0.55, 0, 0),
    "K": (0.35, 0.10, 0.00, 0, 0),
    "G": (0.35, 0.10, 0.00, 0, 0),
    "NG": (0.35, 0.10, 0.00, 0, 0),
    "HH": (0.50, 0.10, 0.00, 0, 0),
    "R": (0.30, 0.00, 0.50, 0, 0),
    "W": (0.20, 0.00, 1.00, 0, 0),
    "Y": (0.25, 0.60, 0.00, 0, 0),
    NOISE_SPEECH: (0.45, 0.10, 0.00, 0, 0),
    SILENCE: (0.00, 0.00, 0.00, 1, 0),
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
    smooth_s: float = 0.03
    """Gaussian smoothing (sigma, seconds) applied after blending (0.02 -> 0.03: mean lag-0 correlation on the
    development clips 0.533 -> 0.536, lowest clip 0.411 -> 0.425; real lips are not faster than 30 ms)."""
    close_db: float = -45.0
    """Below this level (dB re the speech level) the lips are fully pressed together. Real lips do not close in
    every dip between syllables: on the development clips -32/-20 (close/open) gave a mean lag-0 correlation of
    0.475, -40/-28 0.504, -45/-30 0.518; pauses close through `pause_closure` whatever the noise floor."""
    open_db: float = -30.0
    """Above this level (dB re the speech level) silence closure no longer applies."""
    pause_db: float = -35.0
    """A pause: the level with the noise floor taken out stays this far under the speech level ..."""
    pause_min_s: float = 0.3
    """... for at least this long (shorter dips are syllable boundaries and stop closures: `quiet_closure`).
    Development clips: -30 dB / 0.25 s 0.497, -35 dB / 0.3 s 0.517 mean lag-0 correlation (0.518 without it)."""
    pause_blip_s: float = 0.04
    """A louder bit up to this long just before a pause (the release burst of a final p/t/k, a click) is part of
    the pause (bridging such bits everywhere cost 0.017 of mean correlation on the development clips: there
    they are short syllables)."""
    pause_ramp_s: float = 0.06
    """Time the lips take to close at the start of a pause (and to open at its end)."""
    min_gain: float = 0.5
    """Jaw gain of speech far below the speech level; the gain grows linearly with the 1-3 kHz amplitude to 1 at
    the speech level. Measured on the nine development clips (mean lag-0 mouth correlation with the phone and
    spectral cues): 0.0 -> 0.489, 0.15 -> 0.504, 0.3 -> 0.518, 0.5 -> 0.536, 0.7 -> 0.540; the level is a weaker
    cue of the opening than the phones and the spectral balance; deep dips and pauses still close the lips
    (`quiet_closure`, `pause_closure`)."""
    level_clip: float = 1.5
    """Highest gain (amplitude re the speech level): shouts do not tear the jaw open."""
    openness_weight: float = 0.5
    """Weight of the spectral-balance cue (`real3d.audio.features.spectral_openness`) added to the phones' jaw
    target. Development clips, mean lag-0 correlation: 0 -> 0.481, 0.5 -> 0.504, 1.0 -> 0.51 (min over clips
    0.40 -> 0.39 at 1.0), with min_gain 0.15."""
    formant_shape_weight: float = 0.5
    """Share of rounding and spreading that comes from the formants (`real3d.audio.formants.vowel_cues`) on
    voiced hops; the rest comes from the recognised phones (en-US phones guess the lip shape of other languages
    poorly; F2 does not depend on the language)."""
    steady_db: float = 4.0
    """Sound whose band level varies less than this (dB, 90th - 10th percentile over `modulation_window_s`)
    is steady, not speech: the lips close as in silence ..."""
    rhythmic_db: float = 12.0
    """... and above this it moves fully (speech varies 15-30 dB with its syllables)."""
    modulation_window_s: float = 1.2
    """Window over which the level's range is measured (several syllables)."""
    visual_lead_s: float = 0.0
    """The mouth shows what is heard this much later: visible articulation leads the sound
    (lips close before a /m/ is heard, the jaw opens before a vowel's onset). 0 is best on the development
    clips (mean lag-0 correlation, jaw curve alone: -20 ms 0.458, 0 0.469, +20 ms 0.446); the phones'
    anticipation already opens the jaw before a vowel."""


def amplitude_scale(mouth_amp: float) -> float:
    """Our shape scale for an official-style mouth amplitude (0.45 -> 1.0)."""
    if not np.isfinite(mouth_amp) or mouth_amp < 0:
        raise ValueError(f"mouth_amp must be a non-negative number, got {mouth_amp}")
    return float(mouth_amp) / OFFICIAL_MOUTH_AMP


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
        up = smoothstep((tt - (s0 - cfg.gesture_onset_s)) / cfg.gesture_onset_s)
        down = 1.0 - smoothstep((tt - s1) / cfg.gesture_release_s)
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
    openness: np.ndarray | None = None,
    vowels: VowelCues | None = None,
) -> np.ndarray:
    """Mouth parameters [H,k] at 100 Hz (H = len(loudness_db), the 10 ms loudness curve).

    Jaw = (blended phone target + `openness_weight` x spectral openness) x level gain x speech rhythm x
    amplitude; rounding and spreading blend the phones' targets with the formant cues `vowels`;
    the lips close where the audio is silent. The level gain and the rhythm gate read `articulation_db` (the
    1-3 kHz band level, `real3d.audio.features.band_level_db`, same hops) when given, else the broadband
    loudness. `openness` [H] (`real3d.audio.features.spectral_openness`) and `vowels` are optional cues on the
    same hops. How wide this speaker opens is set afterwards, on the whole opening curve
    (`real3d.motion.mouth.normalise_opening`).
    """
    cfg = config or VisemeConfig()
    scale = amplitude_scale(mouth_amp)
    loud = np.asarray(loudness_db, np.float64)
    n = len(loud)
    rel = _relative_db(loud)
    params = blend_targets(relabel_loud_silence(phones, rel, cfg.open_db), n, cfg)
    art = above_noise_floor_db(loud if articulation_db is None else np.asarray(articulation_db, np.float64))
    for name, cue in (("articulation_db", art), ("openness", openness)):
        if cue is not None and len(cue) != n:
            raise ValueError(f"{name} has {len(cue)} hops, loudness_db {n}; compute both on the same audio")
    if vowels is not None:
        if len(vowels.open) != n:
            raise ValueError(
                f"vowel cues have {len(vowels.open)} hops, loudness_db {n}; compute both on the same audio"
            )
        w = cfg.formant_shape_weight * np.asarray(vowels.valid, np.float64)  # formants where they are defined
        params[:, ROUND] = (1.0 - w) * params[:, ROUND] + w * vowels.round
        params[:, SPREAD] = (1.0 - w) * params[:, SPREAD] + w * vowels.spread
    level = np.minimum(np.power(10.0, _relative_db(art) / 20.0), cfg.level_clip)  # amplitude re the speech level
    rhythm = speech_rhythm(art, cfg)
    gain = cfg.min_gain + (1.0 - cfg.min_gain) * level
    jaw = params[:, JAW]
    if openness is not None:
        jaw = jaw + cfg.openness_weight * np.asarray(openness, np.float64)
    params[:, JAW] = jaw * gain
    params[:, [JAW, SPREAD, ROUND, LABIODENTAL]] *= rhythm[:, None]  # steady sound: no shapes (closed below)
    if cfg.smooth_s > 0 and n > 1:
        shape = [JAW, SPREAD, ROUND]
        params[:, shape] = gaussian_filter1d(params[:, shape], cfg.smooth_s / HOP_S, axis=0, mode="nearest")
    # silence and steady sound close the lips (rhythm under 0.5 starts the closure)
    quiet = np.maximum(quiet_closure(rel, cfg), pauses(loud, cfg))
    params[:, PRESS] = np.maximum(params[:, PRESS], np.maximum(quiet, smoothstep(1.0 - 2.0 * rhythm)))
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
    g = smoothstep((depth - cfg.steady_db) / (cfg.rhythmic_db - cfg.steady_db))
    return gaussian_filter1d(g, 0.1 / HOP_S, mode="nearest") if len(g) > 1 else g


def quiet_closure(rel_db: np.ndarray, config: VisemeConfig | None = None) -> np.ndarray:
    """[H] lip closure from the 100 Hz level re speech: 1 below close_db, 0 above open_db; every quiet
    dip is held for at least `gesture_min_s` (stop closures in speech are 20-100 ms) with smooth edges."""
    cfg = config or VisemeConfig()
    rel = np.asarray(rel_db, np.float64)
    if len(rel) == 0:
        return np.zeros(0)
    q = 1.0 - smoothstep((rel - cfg.close_db) / (cfg.open_db - cfg.close_db))
    hold = max(1, int(round(cfg.gesture_min_s / HOP_S)))
    q = maximum_filter1d(q, hold + 1, mode="nearest")
    return gaussian_filter1d(q, 0.01 / HOP_S, mode="nearest")


def pause_closure(rel_db: np.ndarray, config: VisemeConfig | None = None) -> np.ndarray:
    """[H] lip closure in pauses: 1 where the level (dB re speech, noise floor taken out) stays under `pause_db`
    for at least `pause_min_s`, reached `pause_ramp_s` after the pause starts and released as it ends. A pause
    over hiss or room noise closes the mouth, which the plain level threshold of `quiet_closure` would not."""
    cfg = config or VisemeConfig()
    rel = np.asarray(rel_db, np.float64)
    n = len(rel)
    out = np.zeros(n)
    below = rel < cfg.pause_db
    edges = np.flatnonzero(np.diff(np.concatenate([[False], below, [False]]).astype(np.int8)))
    # a release burst (a final p/t/k) or a click just before a pause belongs to it: bridge louder bits of up
    # to pause_blip_s that are followed by a pause; inside speech such bits are syllables and stay
    blip, long_run = cfg.pause_blip_s / HOP_S, cfg.pause_min_s / HOP_S
    for end_prev, start_next, end_next in zip(edges[1:-1:2], edges[2::2], edges[3::2]):
        if start_next - end_prev <= blip and end_next - start_next >= long_run:
            below[end_prev:start_next] = True
    quiet = np.concatenate([[False], below, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    ramp = max(1, int(round(cfg.pause_ramp_s / HOP_S)))
    for a, b in zip(edges[::2], edges[1::2]):
        if (b - a) * HOP_S < cfg.pause_min_s:
            continue
        u = np.arange(a, b)
        out[a:b] = np.minimum(smoothstep((u - a + 1) / ramp), smoothstep((b - u) / ramp))
    return out


def pauses(loudness_db: np.ndarray, config: VisemeConfig | None = None) -> np.ndarray:
    """[H] in [0,1]: 1 inside the pauses of the broadband 100 Hz level `loudness_db` (`pause_closure` of the level
    with its noise floor taken out, re the speech level), 0 while the person speaks."""
    loud = np.asarray(loudness_db, np.float64)
    return pause_closure(_relative_db(above_noise_floor_db(loud)), config)


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
