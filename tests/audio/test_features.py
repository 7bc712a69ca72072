"""Speech features: the 1-3 kHz band level (calibration, blocks) and the syllabic modulation depth."""

from __future__ import annotations

import numpy as np
import pytest

from real3d.audio.features import DB_FLOOR, band_level_db, modulation_depth, speech_levels_db
from real3d.errors import InputError

SR = 16000


def tone(hz: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def test_band_level_is_calibrated_to_the_rms_level_and_ignores_other_bands():
    x = tone(2000.0, 1.0)
    band = band_level_db(x)
    rms, _ = speech_levels_db(x)
    assert band.shape == rms.shape
    mid = slice(10, -10)
    np.testing.assert_allclose(band[mid], 10 * np.log10(0.5**2 / 2), atol=0.05)  # -9.03 dB: all power in band
    np.testing.assert_allclose(band[mid], rms[mid], atol=0.05)
    assert np.all(band_level_db(tone(300.0, 1.0))[mid] < -60)  # below the band
    assert np.all(band_level_db(tone(6000.0, 1.0))[mid] < -60)  # above it
    assert np.all(band_level_db(np.zeros(SR, np.float32)) == DB_FLOOR)
    mix = tone(300.0, 1.0) + tone(2000.0, 1.0, amp=0.05)  # a quiet in-band tone under a loud low one
    np.testing.assert_allclose(band_level_db(mix)[mid], 10 * np.log10(0.05**2 / 2), atol=0.5)


def test_speech_levels_in_one_pass_equal_the_separate_features():
    """The audio driver's one-pass levels: the broadband RMS level (calibrated, DB_FLOOR in digital silence) and
    exactly `band_level_db`."""
    x = np.random.default_rng(1).standard_normal(2 * SR + 77).astype(np.float32) * 0.1
    x[SR // 2 : SR] = 0.0  # a silent stretch
    rms, band = speech_levels_db(x)
    np.testing.assert_array_equal(band, band_level_db(x))
    np.testing.assert_allclose(np.median(rms[120:]), -20.0, atol=0.3)  # white noise of sd 0.1: -20 dB
    assert np.all(rms[60:90] == DB_FLOOR)  # hops wholly inside the silence


def test_band_level_in_blocks_equals_one_pass():
    x = np.random.default_rng(0).standard_normal(3 * SR + 123).astype(np.float32) * 0.1
    np.testing.assert_allclose(band_level_db(x, block_s=0.37), band_level_db(x, block_s=100.0), atol=1e-4)


def test_modulation_depth_separates_syllabic_rhythm_from_steady_sound():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(4 * SR).astype(np.float32) * 0.1
    t = np.arange(len(noise)) / SR
    syllables = noise * (0.05 + 0.95 * np.maximum(np.sin(2 * np.pi * 4.0 * t), 0.0)).astype(np.float32)
    steady = modulation_depth(band_level_db(noise))[100:-100]
    rhythm = modulation_depth(band_level_db(syllables))[100:-100]
    assert steady.max() < 4.0 and rhythm.min() > 15.0
    assert modulation_depth(np.zeros(0)).shape == (0,)
    step = np.r_[np.full(200, -40.0), np.full(200, -10.0)]
    assert modulation_depth(step, window_s=1.0)[200] == pytest.approx(30.0)


def test_band_level_bad_input():
    with pytest.raises(InputError, match="mono"):
        band_level_db(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="Nyquist"):
        band_level_db(tone(1000, 0.1), band_hz=(1000.0, 9000.0))


def test_noise_floor_removal_restores_the_dips_of_speech_in_hiss():
    from real3d.audio.features import above_noise_floor_db

    t = np.arange(400) * 0.01
    speech_power = 10 ** (-1.0 - 2.4 * (1 + np.cos(2 * np.pi * 5.0 * t)) / 2)  # -10 dB peaks, -34 dB dips
    hiss = 10 ** (-2.0)  # -20 dB floor fills the dips
    noisy = 10 * np.log10(speech_power + hiss)
    assert modulation_depth(noisy)[200] < 10.0
    cleaned = above_noise_floor_db(noisy)
    assert modulation_depth(cleaned)[200] > 20.0
    # clean speech with pauses is left as it was (the floor is the pauses' near-silence)
    quiet = 10 * np.log10(speech_power)
    quiet[:100] = DB_FLOOR
    np.testing.assert_allclose(
        above_noise_floor_db(quiet)[100:][quiet[100:] > -20], quiet[100:][quiet[100:] > -20], atol=0.5
    )
    assert np.all(above_noise_floor_db(np.full(10, DB_FLOOR)) == DB_FLOOR)
