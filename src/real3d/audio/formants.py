"""Formant tracks (F1, F2) and the vowel cues they carry, on the 100 Hz analysis grid.

Articulatory facts used here (Stevens, *Acoustic Phonetics*, 1998; Fant 1960):
  - F1 rises with jaw/tongue opening: /i/, /u/ ~250-350 Hz, /e/ ~400-550 Hz, /a/ ~650-850 Hz.
  - Lip rounding lengthens the vocal tract and lowers F2 (and F3): /u/ ~800-1000 Hz, /o/ ~900-1100 Hz;
    spreading with a front tongue raises F2: /i/ ~2200-2800 Hz, /e/ ~1800-2300 Hz.
  - Speakers differ (vocal-tract length: women's formants are ~15-20 % higher than men's), so every cue
    is normalised per speaker: by percentiles of the utterance's own voiced frames.
  - A speaker's typical F1 also tells how wide they open: on the team's nine development clips the sd of the
    real mouth-opening curve is 1.23e-4 x the median voiced F1 (Hz), within +-17 % on every clip (vowels are
    more open, acoustically and visibly, for speakers who open more). `speaker_scale` uses that.

What the formants are *not* used for: the jaw. Adding the F1 cue to the phones' jaw target lowered the mean lag-0
correlation with the real mouth on the development clips (0.536 -> 0.522 at weight 0.25, 0.506 at 0.5; replacing a
quarter of the phone target by it: 0.525); the spectral balance (`real3d.audio.features.spectral_openness`) does that
job better, since F1 is only defined in voiced frames and jumps between formant candidates.

Praat's Burg tracker (`praat-parselmouth`, already a dependency) does the tracking; the audio is processed
in pieces of `PIECE_S`, so memory does not grow with the length of the input (the tracks are 100 Hz arrays).
Measured cost: ~0.6 s of CPU per minute of speech for formants, ~0.3 s for voicing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from real3d.audio.features import HOP_S, percentile_normalise
from real3d.errors import DependencyError, InputError
from real3d.ramps import smoothstep

PIECE_S = 30.0
"""Length of the pieces the trackers run on (plus `MARGIN_S` of context on each side)."""
MARGIN_S = 0.1
"""Context added around each piece so its edges are tracked like the middle."""
MAX_FORMANT_HZ = 5500.0
"""Praat's ceiling for five formants (its recommended value for women's and children's voices; men's F1 and F2,
the two used here, come out the same with it)."""
F1_REFERENCE_HZ = 700.0
"""Median voiced F1 at which `speaker_scale` is 1 (a typical adult voice; the development clips' speakers have
436-820 Hz); the audio driver's opening amplitude `real3d.motion.from_audio.OPENING_SD` is defined at it."""


@dataclass(frozen=True)
class FormantTracks:
    """F1, F2 and voicing per 10 ms hop (hop h centred at h * HOP_S + HOP_S / 2, like the level curves)."""

    f1: np.ndarray
    """[H] float32 first formant in Hz (NaN where Praat found none)."""
    f2: np.ndarray
    """[H] float32 second formant in Hz (NaN where Praat found none)."""
    voiced: np.ndarray
    """[H] bool: periodic (Praat's autocorrelation pitch found an f0)."""

    def __len__(self) -> int:
        return len(self.f1)


@dataclass(frozen=True)
class VowelCues:
    """Mouth-shape cues of the vowels, each in [0, 1] per hop (0 where unvoiced or without formants)."""

    open: np.ndarray
    """[H] jaw opening from F1 (0 at the speaker's 10th percentile, 1 at the 90th)."""
    round: np.ndarray
    """[H] lip rounding: low F2 (speaker-normalised) in a vowel that is not open (/u/, /o/, /w/)."""
    spread: np.ndarray
    """[H] lip spreading: high F2 (/i/, /e/)."""
    valid: np.ndarray
    """[H] bool: the hops the cues describe (voiced, with F1 and F2, and live when `live` was given)."""


def _parselmouth():
    try:
        import parselmouth
    except ImportError as err:  # pragma: no cover - a hard dependency
        raise DependencyError(
            "praat-parselmouth is needed for formant tracking; pip install praat-parselmouth"
        ) from err
    return parselmouth


def formant_tracks(samples: np.ndarray, sample_rate: int = 16000, n_hops: int | None = None) -> FormantTracks:
    """F1/F2 (Burg, 25 ms windows) and voicing (autocorrelation pitch, 75-600 Hz) of mono samples on the 100 Hz
    hop grid; `n_hops` defaults to ceil(duration / HOP_S), the length of the level curves."""
    x = np.asarray(samples, np.float32)
    if x.ndim != 1:
        raise InputError(f"expected mono samples [N], got shape {x.shape}; mix down to mono first")
    n = int(np.ceil(len(x) / (HOP_S * sample_rate))) if n_hops is None else int(n_hops)
    n = max(n, 1)
    pm = _parselmouth()
    f1 = np.full(n, np.nan, np.float32)
    f2 = np.full(n, np.nan, np.float32)
    voiced = np.zeros(n, bool)
    centres = (np.arange(n) + 0.5) * HOP_S
    piece, margin = int(PIECE_S * sample_rate), int(MARGIN_S * sample_rate)
    for a in range(0, len(x), piece):
        b = min(len(x), a + piece)
        lo, hi = max(0, a - margin), min(len(x), b + margin)
        if hi - lo < int(0.05 * sample_rate):  # too short for the 25 ms windows and the pitch tracker
            continue
        sel = (centres >= a / sample_rate) & (centres < b / sample_rate)
        t = centres[sel] - lo / sample_rate  # hop centres in the piece's own time
        snd = pm.Sound(x[lo:hi].astype(np.float64), sampling_frequency=float(sample_rate))
        fm = snd.to_formant_burg(
            time_step=HOP_S, max_number_of_formants=5, maximum_formant=MAX_FORMANT_HZ, window_length=0.025
        )
        ft = np.asarray(fm.xs())
        if len(ft):
            for out, k in ((f1, 1), (f2, 2)):
                v = pm.praat.call(fm, "To Matrix", k).values[0]  # Hz per Praat frame, 0 = undefined
                v = np.where(v > 0, v, np.nan)
                idx = np.clip(np.round((t - ft[0]) / HOP_S).astype(np.int64), 0, len(ft) - 1)
                out[sel] = v[idx]
        pitch = snd.to_pitch_ac(time_step=HOP_S, pitch_floor=75.0, pitch_ceiling=600.0)
        f0 = pitch.selected_array["frequency"]
        if len(f0):
            pt = pitch.xs()
            idx = np.clip(np.round((t - pt[0]) / HOP_S).astype(np.int64), 0, len(f0) - 1)
            voiced[sel] = f0[idx] > 0
    return FormantTracks(f1=f1, f2=f2, voiced=voiced)


def vowel_cues(tracks: FormantTracks, live: np.ndarray | None = None) -> VowelCues:
    """Speaker-normalised vowel cues from formant tracks. `live` [H] (optional) limits them to hops that carry
    speech (e.g. above the silence level): Praat finds formants in noise too."""
    ok = tracks.voiced & np.isfinite(tracks.f1) & np.isfinite(tracks.f2)
    if live is not None:
        ok &= np.asarray(live, bool)
    f1 = np.nan_to_num(tracks.f1.astype(np.float64))
    f2 = np.nan_to_num(tracks.f2.astype(np.float64))
    opening = percentile_normalise(f1, ok)
    z2 = percentile_normalise(f2, ok)
    # rounding: the lowest third of the speaker's F2 range in a vowel that is not open (an /a/ has a low F2 too,
    # but a high F1); spreading: the highest third
    rnd = np.where(ok, smoothstep((0.4 - z2) / 0.3) * (1.0 - opening), 0.0)
    spread = np.where(ok, smoothstep((z2 - 0.6) / 0.3), 0.0)
    return VowelCues(open=opening, round=rnd, spread=spread, valid=ok)


SPEAKER_SCALE_LIMITS = (0.55, 1.4)
"""Range of `speaker_scale`: median voiced F1 of 385-980 Hz. Adult speakers' median voiced F1 lies at about 400-850
Hz (436-820 Hz on the development clips; the earlier lower limit 0.7 = 490 Hz cut two of them, whose mouths then
moved 1.1-1.2x as much as the speaker's); outside it the estimate is more likely a tracking error (noise, music,
a child's or a very breathy voice) than a speaker."""


def speaker_scale(
    tracks: FormantTracks, live: np.ndarray | None = None, limits: tuple[float, float] = SPEAKER_SCALE_LIMITS
) -> float:
    """How wide this speaker opens relative to a typical one: median voiced F1 / `F1_REFERENCE_HZ`, clipped to
    `limits` (1.0 when the audio has under 0.2 s of voiced speech)."""
    ok = tracks.voiced & np.isfinite(tracks.f1)
    if live is not None:
        ok &= np.asarray(live, bool)
    if ok.sum() < int(0.2 / HOP_S):
        return 1.0
    return float(np.clip(np.median(tracks.f1[ok]) / F1_REFERENCE_HZ, *limits))
