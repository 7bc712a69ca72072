"""Phone recognition on espeak-ng speech made in the test (pocketsphinx's shipped en-US model)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from real3d.audio.phones import SILENCE, Phone, PhoneConfig, _cut_points, recognize_phones
from real3d.errors import InputError
from real3d.io.audio import load_audio

ARPABET = set(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
) | {SILENCE, "+SPN+"}
PAD_S = 0.5


def espeak(text: str, tmp_path, pad_s: float = PAD_S) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
    x = load_audio(wav, 16000).samples
    pad = np.zeros(int(pad_s * 16000), np.float32)
    return np.concatenate([pad, x, pad])


def _check_cover(phones: list[Phone], duration: float) -> None:
    assert phones[0].start == 0.0
    assert phones[-1].end == pytest.approx(duration, abs=1e-6)
    for a, b in zip(phones[:-1], phones[1:]):
        assert a.end == pytest.approx(b.start, abs=1e-9)
        assert a.end > a.start
    assert {p.phone for p in phones} <= ARPABET


def test_phones_cover_speech_with_silences_at_the_ends(tmp_path):
    x = espeak("papa bought a map", tmp_path)
    dur = len(x) / 16000
    phones = recognize_phones(x)
    _check_cover(phones, dur)
    assert phones[0].phone == SILENCE and phones[0].end >= PAD_S - 0.1
    assert phones[-1].phone == SILENCE and phones[-1].start <= dur - PAD_S + 0.1
    speech = [p for p in phones if p.phone != SILENCE]
    assert len(speech) >= 4
    vowels = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
    assert any(p.phone in vowels for p in speech)
    assert all(PAD_S - 0.1 <= p.start and p.end <= dur - PAD_S + 0.1 for p in speech)


def test_silence_empty_and_very_short_audio():
    assert recognize_phones(np.zeros(0, np.float32)) == []
    sil = recognize_phones(np.zeros(32000, np.float32))
    assert sil == [Phone(SILENCE, 0.0, 2.0)]
    short = recognize_phones(np.random.default_rng(0).normal(0, 0.1, 800).astype(np.float32))
    assert short == [Phone(SILENCE, 0.0, 0.05)]


def test_bad_input_raises():
    with pytest.raises(InputError):
        recognize_phones(np.zeros((2, 1600), np.float32))
    with pytest.raises(InputError):
        recognize_phones(np.zeros(1600, np.float32), sample_rate=22050)
    with pytest.raises(InputError):
        recognize_phones(np.full(1600, np.nan, np.float32))


def test_long_audio_is_decoded_in_pieces_cut_at_quiet_points(tmp_path):
    x = espeak("one two three four five six", tmp_path, pad_s=0.3)
    cuts = _cut_points(x, 16000, 1.0)
    assert cuts[0] == 0 and cuts[-1] == len(x)
    assert all(0 < b - a <= 16000 for a, b in zip(cuts[:-1], cuts[1:]))
    for prev, c in zip(cuts[:-2], cuts[1:-1]):
        # each cut is the quietest 10 ms in the last third of its piece
        lo, hi = prev + 2 * 16000 // 3, prev + 16000
        energy = [float((x[s : s + 160] ** 2).sum()) for s in range(lo, hi - 159, 160)]
        assert float((x[c : c + 160] ** 2).sum()) == pytest.approx(min(energy))
    phones = recognize_phones(x, config=PhoneConfig(max_piece_s=1.0))
    _check_cover(phones, len(x) / 16000)
    assert sum(p.phone != SILENCE for p in phones) >= 6
