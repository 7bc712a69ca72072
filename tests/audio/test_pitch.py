"""Official f0: Praat AC pitch of synthetic tones and silence, the mel-length and HuBERT-length rules."""

from __future__ import annotations

import numpy as np
import pytest

import real3d.audio.pitch as pitch
from real3d.audio.pitch import mel_num_frames, official_f0
from real3d.errors import InputError

SR = 16000


def _tone(hz: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("hz", [150.0, 220.0])
def test_tone_pitch(hz):
    wav = _tone(hz, 2.0)
    f0 = official_f0(wav)
    assert f0.dtype == np.float32 and f0.shape == (mel_num_frames(32000),) == (99,)
    assert np.all(f0 > 0)  # a steady tone is voiced everywhere
    assert np.abs(f0 - hz).max() < 1.0


def test_silence_is_unvoiced():
    f0 = official_f0(np.zeros(32000, np.float32))
    assert f0.shape == (99,) and np.all(f0 == 0)


def test_tone_then_silence():
    wav = np.concatenate([_tone(150.0, 1.0), np.zeros(SR, np.float32)])
    f0 = official_f0(wav)
    assert np.abs(f0[5:40] - 150).max() < 1.0
    assert np.all(f0[55:] == 0)


def test_mel_length_padding_with_last_value():
    # N = 32200: the mel has (32200-512)//320+1 = 100 frames; Praat's 37.5 ms window gives 99
    wav = _tone(150.0, 32200 / SR)
    raw = pitch.praat_pitch(wav)
    assert raw.size == 99 and mel_num_frames(wav.size) == 100
    f0 = official_f0(wav)
    assert f0.shape == (100,) and f0[-1] == np.float32(raw[-1])


def test_mel_length_rules_on_a_stubbed_tracker(monkeypatch):
    monkeypatch.setattr(pitch, "praat_pitch", lambda wav, sr=SR: np.array([100.0, 0.0, 120.0, 130.0]))
    wav = np.zeros(512 + 320 * 6, np.float32)  # 7 mel frames
    assert official_f0(wav).tolist() == [100, 0, 120, 130, 130, 130, 130]  # padded with the last value
    wav = np.zeros(512 + 320 * 1, np.float32)  # 2 mel frames
    assert official_f0(wav).tolist() == [100, 0]  # cut


def test_hubert_length_cut_or_zero_pad():
    wav = _tone(150.0, 1.0)  # 49 mel frames
    padded = official_f0(wav, num_frames=56)
    assert padded.shape == (56,) and np.all(padded[49:] == 0) and np.all(padded[:49] > 140)
    cut = official_f0(wav, num_frames=40)
    assert np.array_equal(cut, padded[:40])


def test_bad_inputs():
    with pytest.raises(InputError, match="16 kHz"):
        official_f0(_tone(150.0, 1.0), sample_rate=22050)
    with pytest.raises(InputError, match="512"):
        official_f0(np.zeros(300, np.float32))
