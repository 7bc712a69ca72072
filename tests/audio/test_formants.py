"""Formant tracking and vowel cues on synthetic vowels with known formants (a pulse train through resonators)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from real3d.audio.features import HOP_S
from real3d.audio.formants import (
    F1_REFERENCE_HZ,
    SPEAKER_SCALE_LIMITS,
    FormantTracks,
    formant_tracks,
    speaker_scale,
    vowel_cues,
)

SR = 16000
VOWELS = {"a": (750, 1200), "e": (480, 1900), "i": (290, 2300), "u": (310, 850)}
"""F1, F2 (Hz) of the test vowels (Peterson & Barney-like values for a male voice)."""
SEG_S = 0.4


def vowel(f1: float, f2: float, seconds: float = SEG_S, f0: float = 120.0) -> np.ndarray:
    """A vowel: a glottal pulse train filtered by resonators at F1, F2, 2600, 3500 and 4500 Hz (five formants
    under 5500 Hz, as Praat's tracker expects)."""
    n = int(seconds * SR)
    x = np.zeros(n)
    x[:: int(SR / f0)] = 1.0
    x = lfilter([1.0], [1.0, -0.97], x)  # glottal roll-off
    for f, bw in ((f1, 80.0), (f2, 100.0), (2600.0, 150.0), (3500.0, 200.0), (4500.0, 250.0)):
        r = np.exp(-np.pi * bw / SR)
        a = [1.0, -2 * r * np.cos(2 * np.pi * f / SR), r * r]
        x = lfilter([sum(a)], a, x)  # unit gain at 0 Hz
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def vowel_train():
    """The four vowels one after another, each SEG_S long, with 0.2 s of silence before and after."""
    pad = np.zeros(int(0.2 * SR), np.float32)
    x = np.concatenate([pad] + [vowel(*VOWELS[v]) for v in VOWELS] + [pad])
    tracks = formant_tracks(x, SR)
    return x, tracks


def _segment(values: np.ndarray, k: int) -> np.ndarray:
    """The middle half of vowel k's hops."""
    a = int((0.2 + k * SEG_S + SEG_S / 4) / HOP_S)
    return values[a : a + int(SEG_S / 2 / HOP_S)]


def test_tracks_find_the_synthetic_formants(vowel_train):
    x, tr = vowel_train
    assert len(tr) == int(np.ceil(len(x) / (HOP_S * SR)))
    for k, (f1, f2) in enumerate(VOWELS.values()):
        assert np.nanmedian(_segment(tr.f1, k)) == pytest.approx(f1, rel=0.15)
        assert np.nanmedian(_segment(tr.f2, k)) == pytest.approx(f2, rel=0.15)
        assert _segment(tr.voiced, k).mean() > 0.9
    assert not tr.voiced[: int(0.15 / HOP_S)].any()  # the leading silence is unvoiced


def test_vowel_cues_order_opening_and_rounding(vowel_train):
    _, tr = vowel_train
    cues = vowel_cues(tr)
    med = {
        v: {c: float(np.median(_segment(getattr(cues, c), k))) for c in ("open", "round", "spread")}
        for k, v in enumerate(VOWELS)
    }
    assert med["a"]["open"] > med["e"]["open"] > med["i"]["open"]  # jaw opening follows F1
    assert med["u"]["round"] == max(m["round"] for m in med.values()) and med["u"]["round"] > 0.5
    assert med["a"]["round"] < 0.1  # a low F2 alone does not round an open vowel
    assert med["i"]["spread"] == max(m["spread"] for m in med.values()) and med["i"]["spread"] > 0.5
    assert np.all(cues.open[: int(0.15 / HOP_S)] == 0) and np.all(cues.round[: int(0.15 / HOP_S)] == 0)


def test_cues_are_normalised_per_speaker(vowel_train):
    """A speaker with a 20 % longer vocal tract (all formants 1/1.2) gets the same cues; its speaker scale
    follows its median F1."""
    _, tr = vowel_train
    low = FormantTracks(f1=tr.f1 / 1.2, f2=tr.f2 / 1.2, voiced=tr.voiced)
    for name in ("open", "round", "spread"):
        np.testing.assert_allclose(getattr(vowel_cues(low), name), getattr(vowel_cues(tr), name), atol=1e-6)
    live = tr.voiced & np.isfinite(tr.f1)
    wide = (0.1, 10.0)
    assert speaker_scale(tr, limits=wide) == pytest.approx(np.median(tr.f1[live]) / F1_REFERENCE_HZ)
    assert speaker_scale(low, limits=wide) == pytest.approx(speaker_scale(tr, limits=wide) / 1.2, rel=1e-5)
    child = FormantTracks(f1=tr.f1 * 3.0, f2=tr.f2 * 3.0, voiced=tr.voiced)
    deep = FormantTracks(f1=tr.f1 / 3.0, f2=tr.f2 / 3.0, voiced=tr.voiced)
    assert speaker_scale(child) == pytest.approx(SPEAKER_SCALE_LIMITS[1])  # clipped to the default limits
    assert speaker_scale(deep) == pytest.approx(SPEAKER_SCALE_LIMITS[0])
    silent = FormantTracks(np.full(50, np.nan, np.float32), np.full(50, np.nan, np.float32), np.zeros(50, bool))
    assert speaker_scale(silent) == 1.0 and np.all(vowel_cues(silent).open == 0)


def test_long_audio_is_tracked_in_pieces_like_a_whole(monkeypatch):
    """Pieces of PIECE_S (with context margins) give the same tracks as one piece."""
    import real3d.audio.formants as F

    x = np.concatenate([vowel(*VOWELS[v], seconds=0.7) for v in "aeiu"])
    whole = formant_tracks(x)
    monkeypatch.setattr(F, "PIECE_S", 0.55)
    pieces = formant_tracks(x)
    inside = np.ones(len(whole), bool)
    for k in range(1, 6):  # Praat's first and last frame of a piece can differ by a hop: skip the seams
        inside[int(k * 0.55 / HOP_S) - 3 : int(k * 0.55 / HOP_S) + 3] = False
    np.testing.assert_array_equal(pieces.voiced[inside], whole.voiced[inside])
    ok = inside & np.isfinite(whole.f1) & np.isfinite(pieces.f1)
    assert ok.sum() > 0.8 * inside.sum()
    np.testing.assert_allclose(pieces.f1[ok], whole.f1[ok], rtol=0.1)  # Praat resamples each piece as a whole
