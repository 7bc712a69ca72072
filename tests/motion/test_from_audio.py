"""AudioDriver end to end on espeak-ng speech made in the test ("papa bought a map" with padded silence)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from real3d.audio.features import hops_to_frames, speech_level, speech_levels_db
from real3d.audio.phones import SILENCE
from real3d.errors import InputError
from real3d.io.audio import load_audio
from real3d.motion.from_audio import AudioDriver
from real3d.motion.mouth import mouth_offsets

PAD_S = 0.5
OPEN_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH"}
BILABIALS = {"P", "B", "M"}


@pytest.fixture(scope="module")
def neutral(astronaut_canonical) -> np.ndarray:
    """The astronaut's neutral canonical face."""
    return astronaut_canonical


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """16 kHz espeak-ng speech of a known sentence with 0.5 s of silence on both sides."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path_factory.mktemp("speech") / "papa.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "papa bought a map"], check=True)
    x = load_audio(wav, 16000).samples
    pad = np.zeros(int(PAD_S * 16000), np.float32)
    return np.concatenate([pad, x, pad])


@pytest.fixture(scope="module")
def driver100(speech, neutral) -> AudioDriver:
    """The driver at 100 fps (10 ms frames) for timing checks."""
    d = AudioDriver(speech, neutral, fps=100.0, seed=0)
    d.analysis()
    return d


def test_length_and_track_shapes(speech, neutral):
    d = AudioDriver(speech, neutral)
    assert len(d) == round(len(speech) / 16000 * 25)
    tr = d.track()
    assert len(tr) == len(d) and tr.fps == 25.0
    assert tr.expression.shape == (len(d), 478, 3)
    np.testing.assert_allclose(
        tr.mouth_open, tr.expression[:, 14, 1] - tr.expression[:, 13, 1] + neutral[14, 1] - neutral[13, 1], atol=1e-5
    )


def test_mouth_closed_in_silence_open_on_vowels(driver100, speech):
    a = driver100.analysis()
    t = np.arange(len(driver100)) / 100.0
    dur = len(speech) / 16000
    lead, trail = t < PAD_S - 0.06, t > dur - PAD_S + 0.15
    assert np.all(a.mouth_open[lead] == 0.0) and np.all(a.mouth_open[trail] == 0.0)
    vowels = [p for p in a.phones if p.phone in OPEN_VOWELS and p.end - p.start >= 0.05]
    assert vowels, "the recognizer found no open vowel"
    for p in vowels:  # openings are sized like real speakers' (their 90th percentile: 0.09-0.33, median 0.2);
        mid = int(round(0.5 * (p.start + p.end) * 100))  # the shortest here is a 60 ms schwa ("bought a map")
        assert a.mouth_open[mid] > 0.06, p
    assert a.mouth_open.max() > 0.15


def test_mouth_closed_at_bilabials_and_stop_closures(driver100, speech):
    a = driver100.analysis()
    bil = [p for p in a.phones if p.phone in BILABIALS]
    assert bil, "the recognizer found no bilabial"
    for p in bil:
        mid = int(round(0.5 * (p.start + p.end) * 100))
        assert a.mouth_open[mid] == 0.0, p
    # acoustic stop closures inside the speech (near-silent 10 ms hops between loud ones) close the lips
    rms, _ = speech_levels_db(speech)
    rel = rms - speech_level(rms)
    loud = np.flatnonzero(rel > -20)
    gaps = [h for h in range(loud[0], loud[-1]) if rel[h] < -50]
    assert gaps, "espeak speech has no stop closure"
    for h in gaps:
        assert a.mouth_open[h] < 0.01, h / 100


def test_opening_times_follow_phone_times(driver100):
    a = driver100.analysis()
    mo = a.mouth_open
    speech = [p for p in a.phones if p.phone != SILENCE]
    onset = speech[0].start
    first_open = np.flatnonzero(mo > 0.03)[0] / 100.0
    assert abs(first_open - onset) <= 0.06
    last_open = np.flatnonzero(mo > 0.03)[-1] / 100.0
    assert abs(last_open - speech[-1].end) <= 0.06
    for p in a.phones:
        if p.phone in BILABIALS:
            after = np.flatnonzero(mo[int(p.end * 100) - 5 :] > 0.03)
            if len(after):  # the release of the bilabial opens the mouth within 60 ms
                assert (int(p.end * 100) - 5 + after[0]) / 100.0 - p.end <= 0.06


def test_chunks_equal_whole_track_and_blink_does_not_move_head(speech, neutral):
    d = AudioDriver(speech, neutral, blink="natural", seed=1)
    whole = d.track()
    parts = list(d.chunks(size=16))
    assert [len(p) for p in parts][:-1] == [16] * (len(parts) - 1) and sum(map(len, parts)) == len(d)
    for name in ("euler", "trans", "expression", "blink", "mouth_open"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]), getattr(whole, name))
    # offsets are the rig's deformation of the closed rest face, plus closing the photo's mouth
    expected = mouth_offsets(d.rest, d.analysis().mouth_params, d.rig) + (d.rest - neutral)
    np.testing.assert_allclose(whole.expression, expected, atol=1e-6)
    none = AudioDriver(speech, neutral, blink="none", seed=1).track()
    assert np.all(none.blink == 0)
    np.testing.assert_array_equal(none.euler, whole.euler)
    np.testing.assert_array_equal(none.expression, whole.expression)
    # idle head motion: small, smooth, deterministic; --still removes it
    deg = np.rad2deg(whole.euler)
    assert 0.05 < np.abs(deg).max() < 5.0 and np.abs(np.diff(deg, axis=0)).max() < 0.5
    assert np.all(AudioDriver(speech, neutral, still=True).track().euler == 0)


def test_silent_audio_gives_closed_mouth_with_blinks(neutral):
    d = AudioDriver(np.zeros(16000 * 6, np.float32), neutral, blink="natural", seed=0)
    tr = d.track()
    assert len(tr) == 150
    assert np.all(tr.mouth_open == 0.0)
    assert tr.blink.max() == pytest.approx(1.0)
    assert np.abs(np.rad2deg(tr.euler)).max() < 5.0
    periodic = AudioDriver(np.zeros(16000 * 6, np.float32), neutral, blink="periodic").track()
    assert periodic.blink[0] == 0.0 and periodic.blink[5] > 0.5 and periodic.blink[125 + 5] > 0.5


def test_very_short_and_empty_audio(neutral):
    tr = AudioDriver(np.full(1600, 0.1, np.float32), neutral).track()  # 0.1 s
    assert len(tr) == 2 and np.all(np.isfinite(tr.expression))
    tiny = AudioDriver(np.zeros(80, np.float32), neutral).track()  # 5 ms still gives one frame
    assert len(tiny) == 1 and tiny.mouth_open[0] == 0.0
    with pytest.raises(InputError, match="zero length"):
        AudioDriver(np.zeros(0, np.float32), neutral)
    with pytest.raises(InputError, match="mono"):
        AudioDriver(np.zeros((2, 100), np.float32), neutral)


def test_steady_sound_between_speech_does_not_move_the_mouth(speech, neutral):
    """A held musical note (360 Hz with harmonics through the 1-3 kHz band) as loud as the speech: the
    recognizer hears a long vowel, but without syllabic rhythm the lips close as in silence."""
    from real3d.audio.features import band_level_db

    t = np.arange(int(2.5 * 16000)) / 16000
    note = sum(np.sin(2 * np.pi * 360.0 * k * t) / k for k in range(1, 9)).astype(np.float32)
    live = band_level_db(speech)
    ref = np.percentile(live[live > -70], 90)
    note *= np.float32(10 ** ((ref - np.median(band_level_db(note))) / 20))
    x = np.concatenate([speech, note, speech])
    a = AudioDriver(x, neutral, fps=100.0, still=True, blink="none").analysis()
    n0 = len(speech) / 16000
    held = a.mouth_open[int((n0 + 0.8) * 100) : int((n0 + 1.7) * 100)]
    first = a.mouth_open[: int(n0 * 100)]
    assert first.max() > 0.1  # the speech around it still opens the mouth (0.1 eye distances: ~15 px at 512)
    assert held.max() < 0.01  # pressed together
    alone = AudioDriver(note, neutral, fps=100.0, still=True, blink="none").analysis().mouth_open
    assert alone.max() < 0.01  # a recording of nothing but the note: no lip motion either


def test_speech_over_steady_hiss_still_moves_the_mouth(speech, neutral):
    """White noise 10 dB under the speech fills the pauses between syllables; the noise floor is taken out
    before the rhythm test, so the mouth keeps moving with the speech."""
    rng = np.random.default_rng(3)
    live = speech[np.abs(speech) > 1e-4]
    noisy = speech + rng.standard_normal(len(speech)).astype(np.float32) * np.float32(np.sqrt(np.mean(live**2) / 10.0))
    clean = AudioDriver(speech, neutral, still=True, blink="none").analysis().mouth_open
    hiss = AudioDriver(noisy, neutral, still=True, blink="none").analysis().mouth_open
    assert hiss.max() > 0.5 * clean.max()
    assert hiss.std() > 0.5 * clean.std()


def openings(mouth_open: np.ndarray) -> int:
    """Opening gestures of a mouth curve: peaks that rise at least 0.03 (canonical units, ~4 px at 512 px)
    above the troughs around them. Real lips do not close between every two syllables, so counting full
    closures would undercount."""
    from scipy.signal import find_peaks

    return len(find_peaks(mouth_open, prominence=0.03)[0])


@pytest.mark.parametrize(
    "voice, text",
    [
        ("de", "Wir treffen uns nächste Woche wieder, um über die Pläne zu sprechen."),
        ("cmn", "我们下周再见面，讨论夏天的计划。"),
        ("es", "Mañana por la mañana vamos a comprar pan y café en el mercado."),
    ],
)
def test_non_english_speech_opens_and_closes_the_mouth_per_syllable(voice, text, neutral, tmp_path):
    """The en-US phone model still finds vowels and closures in other languages: the mouth opens at a
    syllable-like rate (2-8 opening gestures per second of speech), closes at the bilabials the recognizer
    finds, and rests closed in the silence around the speech."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path / f"{voice}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    x = load_audio(wav, 16000).samples
    pad = np.zeros(int(PAD_S * 16000), np.float32)
    a = AudioDriver(np.concatenate([pad, x, pad]), neutral, still=True, blink="none").analysis()
    mo = a.mouth_open
    talking = len(x) / 16000
    assert 2.0 * talking <= openings(mo) <= 8.0 * talking
    opened = mo > 0.03
    assert not opened[: int(PAD_S * 25) - 2].any() and not opened[-int(PAD_S * 25) + 4 :].any()
    for p in a.phones:
        if p.phone in BILABIALS and p.end - p.start >= 0.04:
            assert mo[int(round(0.5 * (p.start + p.end) * 25))] < 0.01, p


@pytest.fixture(scope="module")
def open_neutral(neutral) -> np.ndarray:
    """A source photographed mid-word: the astronaut with her jaw opened (inner-lip gap ~0.15)."""
    from real3d.motion.mouth import JAW, MOUTH_PARAMS, closed_mouth

    rest = closed_mouth(neutral)
    p = np.zeros((1, len(MOUTH_PARAMS)))
    p[0, JAW] = 0.5
    return rest + mouth_offsets(rest, p)[0]


@pytest.mark.parametrize("source", ["astronaut", "open"])
def test_silence_closes_the_mouth_within_120ms_even_for_an_open_source(source, speech, neutral, open_neutral):
    """Rendered lip positions (source + offsets): closed in the leading silence, open in the speech, and
    closed again at most 120 ms after the speech ends, for the astronaut (a toothy smile) and a source with its
    jaw open."""
    from real3d.motion.mouth import mouth_gap

    q = neutral if source == "astronaut" else open_neutral
    assert mouth_gap(q) > 0.08  # both sources have their lips apart
    d = AudioDriver(speech, q, fps=100.0, still=True, blink="none")
    tr = d.track()
    gaps = np.array([mouth_gap(q + e) for e in tr.expression])
    rms, _ = speech_levels_db(speech)
    rel = rms - speech_level(rms)
    loud = np.flatnonzero(rel > -45.0)
    start, end = loud[0], loud[-1] + 1  # hops of the first and last sound above the silence threshold
    assert np.all(gaps[: start - 6] < 1e-6)
    assert gaps[start:end].max() > 0.1
    assert np.all(gaps[end + 12 :] < 1e-6)
    np.testing.assert_allclose(gaps, np.maximum(tr.mouth_open, 0.0), atol=2e-3)


def test_opening_amplitude_follows_the_speaker_not_the_recording_level(speech, neutral):
    """The opening moves OPENING_SD x the speaker's scale (median F1) while the person talks, whatever the
    recording level: the same speech 12 dB quieter moves the mouth as much (its phones differ: the recognizer is
    not level-invariant)."""
    from real3d.motion.from_audio import OPENING_SD
    from real3d.motion.visemes import pauses

    loud = AudioDriver(speech, neutral, still=True, blink="none")
    a = loud.analysis()
    rms, _ = speech_levels_db(speech)
    talking = hops_to_frames(pauses(rms), len(a.mouth_open), 25.0) < 0.5
    assert 0.55 <= a.speaker_scale <= 1.4
    assert np.std(a.mouth_open[talking]) == pytest.approx(OPENING_SD * a.speaker_scale, rel=0.03)
    quiet = AudioDriver(speech * np.float32(0.25), neutral, still=True, blink="none").analysis()
    assert np.std(quiet.mouth_open[talking]) == pytest.approx(np.std(a.mouth_open[talking]), rel=0.03)
    half = AudioDriver(speech, neutral, still=True, blink="none", mouth_amp=0.225).analysis()
    assert np.std(half.mouth_open[talking]) == pytest.approx(0.5 * np.std(a.mouth_open[talking]), rel=0.05)
