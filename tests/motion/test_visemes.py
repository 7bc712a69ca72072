"""Viseme targets, coarticulation (dominance blending, lip gestures) and loudness modulation."""

from __future__ import annotations

import numpy as np
import pytest

from real3d.audio.phones import NOISE_SPEECH, SILENCE, Phone
from real3d.motion.mouth import JAW, LABIODENTAL, PRESS, ROUND, SPREAD
from real3d.motion.visemes import (
    VISEME_TARGETS,
    amplitude_scale,
    blend_targets,
    lip_gestures,
    quiet_closure,
    relabel_loud_silence,
    sample_at_frames,
    speech_rhythm,
    visemes_from_phones,
)


def seq(*items: tuple[str, float]) -> list[Phone]:
    out, t = [], 0.0
    for ph, d in items:
        out.append(Phone(ph, t, t + d))
        t += d
    return out


def test_long_vowels_reach_their_targets_and_blend_smoothly():
    phones = seq((SILENCE, 0.5), ("AA", 0.3), ("IY", 0.3), ("UW", 0.3), (SILENCE, 0.5))
    p = blend_targets(phones, 190)
    assert p[65, JAW] == pytest.approx(VISEME_TARGETS["AA"][JAW], abs=0.12)  # slight undershoot
    assert p[95, SPREAD] == pytest.approx(VISEME_TARGETS["IY"][SPREAD], abs=0.1)
    assert p[125, ROUND] == pytest.approx(VISEME_TARGETS["UW"][ROUND], abs=0.1)
    assert np.abs(np.diff(p, axis=0)).max() < 0.2  # no step changes at 10 ms resolution
    # anticipation: the jaw starts opening before the vowel and rounding starts before /uw/
    assert p[47, JAW] > 0.1
    assert p[105, ROUND] > 0.1


def test_bilabial_and_labiodental_gestures_are_reached_even_when_short():
    phones = seq(("AA", 0.2), ("P", 0.03), ("AA", 0.2), ("F", 0.03), ("AA", 0.2))
    g = lip_gestures(phones, 66)
    assert g[21, PRESS] == pytest.approx(1.0) and g[44, LABIODENTAL] == pytest.approx(1.0)
    assert g[5, PRESS] == 0.0 and g[30, PRESS] == 0.0 and g[60, LABIODENTAL] == 0.0
    assert np.abs(np.diff(g, axis=0)).max() < 0.6
    p = blend_targets(phones, 66)
    assert p[21, PRESS] == pytest.approx(1.0) and p[10, PRESS] == 0.0


def test_loud_silence_becomes_speech_and_quiet_audio_closes_the_mouth():
    phones = seq((SILENCE, 1.0))
    rel = np.full(100, -60.0)
    rel[40:60] = -5.0
    out = relabel_loud_silence(phones, rel, -20.0)
    assert [p.phone for p in out] == [SILENCE, NOISE_SPEECH, SILENCE]
    assert out[1].start == pytest.approx(0.4) and out[1].end == pytest.approx(0.6)
    q = quiet_closure(rel)
    assert np.all(q[:30] == pytest.approx(1.0)) and np.all(q[47:53] < 0.01)
    # a 20 ms dip inside speech is held closed for at least the minimum gesture time
    rel2 = np.zeros(100)
    rel2[50:52] = -80.0
    q2 = quiet_closure(rel2)
    assert q2[49:54].min() > 0.9 and q2[30] == 0.0


def test_loudness_and_mouth_amp_scale_the_jaw():
    phones = seq((SILENCE, 0.2), ("AA", 0.6), (SILENCE, 0.2))
    loud = np.full(100, -100.0)
    loud[20:50] = -20.0
    loud[50:80] = -40.0  # same vowel, 20 dB quieter
    p = visemes_from_phones(phones, loud)
    assert p[35, JAW] > 2 * p[65, JAW] > 0
    assert np.all(p[:15, PRESS] >= 0.99) and np.all(p[90:, PRESS] >= 0.99)  # closed on silence
    p2 = visemes_from_phones(phones, loud, mouth_amp=0.9)
    np.testing.assert_allclose(p2[:, JAW], 2 * p[:, JAW], atol=1e-9)
    assert amplitude_scale(0.45) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        amplitude_scale(-1.0)
    silent = visemes_from_phones([Phone(SILENCE, 0.0, 1.0)], np.full(100, -100.0))
    assert np.all(silent[:, PRESS] == 1.0) and np.all(silent[:, JAW] == 0.0)


def test_sample_at_frames_interpolates_on_the_frame_clock():
    v = np.arange(100, dtype=np.float64)  # value = hop index = time in 10 ms
    f = sample_at_frames(v, 25, 25.0)
    np.testing.assert_allclose(f, np.arange(25) * 4.0)
    assert sample_at_frames(np.zeros((0, 5)), 3, 25.0).shape == (3, 5)


def test_rhythm_gate_and_articulation_band_gain():
    t = np.arange(400) * 0.01
    syllables = -10.0 - 12.0 * (1 + np.cos(2 * np.pi * 5.0 * t))  # 5 per second, 24 dB deep
    steady = np.full(400, -10.0) + 0.5 * np.sin(2 * np.pi * 5.0 * t)
    assert speech_rhythm(syllables)[50:-50].min() > 0.99
    assert speech_rhythm(steady).max() < 0.01
    phones = seq(("AA", 4.0))
    loud = np.full(400, -20.0)
    gated = visemes_from_phones(phones, loud, articulation_db=steady)
    assert np.all(gated[:, JAW] == 0.0) and np.all(gated[:, PRESS] > 0.99)  # steady sound = silence
    moving = visemes_from_phones(phones, loud, articulation_db=syllables)
    # the jaw follows the band level: open at its peaks (t = 0.1 s, 0.3 s ...), about half as open in its troughs
    # (min_gain 0.5: real jaws stay half open between the syllables of a vowel train)
    assert moving[190, JAW] > 0.8 and moving[200, JAW] < 0.7 * moving[190, JAW]
    with pytest.raises(ValueError, match="same audio"):
        visemes_from_phones(phones, loud, articulation_db=syllables[:-1])
