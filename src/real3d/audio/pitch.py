"""Pitch (f0) at 50 Hz exactly as the official Real3D-Portrait / GeneFace++ audio pipeline computes it.

`official_f0` runs Praat's autocorrelation pitch tracker through `praat-parselmouth` with the official settings
(`to_pitch_ac(time_step=0.02, voicing_threshold=0.6, pitch_floor=80, pitch_ceiling=750)`), takes the
frequency of the best candidate (0 Hz when unvoiced), matches the length to the 80-bin log-mel the official
code computes alongside (n_fft 512, hop 320, `center=False`: (N - 512) // 320 + 1 frames; a shorter track
is padded with its last value, a longer one cut), then to the HuBERT feature length (cut or zero-padded).
"""

from __future__ import annotations

import logging

import numpy as np

from real3d.errors import DependencyError, InputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The official pipeline's audio rate."""
TIME_STEP_S = 0.02
"""Pitch frame step (50 Hz, the HuBERT rate)."""
VOICING_THRESHOLD = 0.6
"""Praat voicing threshold of the official call."""
PITCH_FLOOR_HZ = 80.0
"""Lowest pitch searched (also sets Praat's 3-period window: 37.5 ms)."""
PITCH_CEILING_HZ = 750.0
"""Highest pitch searched."""
MEL_N_FFT = 512
"""n_fft of the official mel spectrogram (only its frame count is used here)."""
MEL_HOP = 320
"""Hop of the official mel spectrogram (20 ms at 16 kHz)."""


def mel_num_frames(num_samples: int, n_fft: int = MEL_N_FFT, hop: int = MEL_HOP) -> int:
    """Frames of an STFT with `center=False`: (N - n_fft) // hop + 1 (0 when N < n_fft)."""
    return 0 if num_samples < n_fft else (num_samples - n_fft) // hop + 1


def praat_pitch(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Raw Praat AC pitch track with the official settings: float64 [F] in Hz, 0 when unvoiced."""
    try:
        import parselmouth
    except ImportError as err:
        raise DependencyError(
            "praat-parselmouth is needed for the official pitch features; install it with "
            "`pip install praat-parselmouth`"
        ) from err
    sound = parselmouth.Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=float(sample_rate))
    try:
        pitch = sound.to_pitch_ac(
            time_step=TIME_STEP_S,
            voicing_threshold=VOICING_THRESHOLD,
            pitch_floor=PITCH_FLOOR_HZ,
            pitch_ceiling=PITCH_CEILING_HZ,
        )
    except parselmouth.PraatError as err:
        reason = str(err).strip()
        raise InputError(f"Praat cannot track the pitch of this audio ({reason}); pass longer audio") from None
    return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def official_f0(wav16k: np.ndarray, num_frames: int | None = None, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """f0 in Hz at 50 Hz, float32 [T]: 0 where unvoiced.

    wav16k: [N] mono samples at 16 kHz. The track is first matched to the mel frame count
    (N - 512) // 320 + 1 (padding with the last value or cutting), then, when `num_frames` is given (the
    HuBERT length, already padded to a multiple of 8), cut or zero-padded to it.
    """
    if sample_rate != SAMPLE_RATE:
        raise InputError(
            f"official f0 needs 16 kHz audio, got {sample_rate} Hz; load it with "
            "real3d.io.audio.load_audio(path, sample_rate=16000)"
        )
    wav = np.asarray(wav16k, dtype=np.float32).reshape(-1)
    n_mel = mel_num_frames(wav.size)
    if n_mel == 0:
        raise InputError(
            f"the audio has {wav.size} samples; the official features need at least {MEL_N_FFT} (32 ms at 16 kHz)"
        )
    f0 = praat_pitch(wav, sample_rate)
    delta = n_mel - f0.size
    if abs(delta) > 8:
        log.warning("Praat gave %d pitch frames for %d mel frames", f0.size, n_mel)
    if delta > 0:
        last = f0[-1] if f0.size else 0.0
        f0 = np.concatenate([f0, np.full(delta, last)])
    f0 = f0[:n_mel]
    if num_frames is not None:
        if num_frames < 0:
            raise InputError(f"num_frames must be >= 0, got {num_frames}")
        f0 = f0[:num_frames] if f0.size >= num_frames else np.pad(f0, (0, num_frames - f0.size))
    return f0.astype(np.float32)
