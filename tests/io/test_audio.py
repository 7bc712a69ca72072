"""Audio loading: formats, resampling, channel mixing, audio of videos, bad input."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from real3d.errors import InputError
from real3d.io.audio import Audio, has_audio, load_audio


def _tones(rate: int, seconds: float, freqs: tuple[float, ...] = (440.0, 1000.0)) -> np.ndarray:
    """float32 (C, N): one sine per channel at the given frequencies, amplitude 0.3."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def _write_audio(path: Path, pcm: np.ndarray, rate: int, codec: str) -> Path:
    """Encode (C, N) float32 with PyAV (the codec context converts to its own sample format)."""
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=rate)
    s.codec_context.layout = "mono" if pcm.shape[0] == 1 else "stereo"
    step = 1024
    for i in range(0, pcm.shape[1], step):
        f = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[:, i : i + step]), format="fltp", layout=s.codec_context.layout.name
        )
        f.sample_rate, f.pts = rate, i
        c.mux(s.encode(f))
    c.mux(s.encode(None))
    c.close()
    return path


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    data = (np.clip(pcm.T, -1, 1) * 32767).astype("<i2")  # N x C interleaved
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * rate / x.size)


@pytest.mark.parametrize(
    ("ext", "codec", "rate"),
    [
        (".wav", None, 44100),
        (".flac", "flac", 44100),
        (".mp3", "libmp3lame", 44100),
        (".m4a", "aac", 44100),
        (".ogg", "libopus", 48000),
    ],
)
def test_formats_resample_and_mix(tmp_path: Path, ext: str, codec: str | None, rate: int) -> None:
    secs = 1.0
    pcm = _tones(rate, secs)
    path = tmp_path / f"tone{ext}"
    _write_wav(path, pcm, rate) if codec is None else _write_audio(path, pcm, rate, codec)
    assert has_audio(path)

    stereo = load_audio(path, sample_rate=None, mono=False)
    assert stereo.sample_rate == rate and stereo.samples.shape[0] == 2 and stereo.samples.dtype == np.float32
    assert stereo.duration == pytest.approx(secs, abs=0.06)  # codec padding (mp3/aac) is < 60 ms
    mid = slice(int(0.2 * rate), int(0.8 * rate))
    assert _peak_hz(stereo.samples[0, mid], rate) == pytest.approx(440, abs=3)
    assert _peak_hz(stereo.samples[1, mid], rate) == pytest.approx(1000, abs=3)

    mono = load_audio(path)  # 16 kHz mono by default
    assert mono.sample_rate == 16000 and mono.samples.ndim == 1 and mono.samples.dtype == np.float32
    assert mono.duration == pytest.approx(secs, abs=0.06)
    seg = mono.samples[int(0.2 * 16000) : int(0.8 * 16000)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    freqs = np.fft.rfftfreq(seg.size, 1 / 16000)
    # The down-mix keeps both tones at similar strength.
    p440 = spec[np.abs(freqs - 440) < 5].max()
    p1k = spec[np.abs(freqs - 1000) < 5].max()
    assert 0.5 < p440 / p1k < 2.0
    assert np.abs(mono.samples).max() <= 1.0


def test_wav_exact_values_at_native_rate(tmp_path: Path) -> None:
    pcm = _tones(16000, 0.5, (300.0,))
    path = _write_wav(tmp_path / "mono.wav", pcm, 16000)
    a = load_audio(path, sample_rate=16000)
    assert a.samples.shape == (8000,)
    expected = (pcm[0] * 32767).astype(np.int16) / 32768.0  # what the 16-bit file holds
    np.testing.assert_allclose(a.samples, expected, atol=1e-6)


def test_audio_track_of_a_video(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
    a = c.add_stream("aac", rate=48000)
    a.codec_context.layout = "mono"
    for i in range(25):
        f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        f.pts = i
        c.mux(v.encode(f))
    c.mux(v.encode(None))
    pcm = _tones(48000, 1.0, (500.0,))
    for i in range(0, pcm.shape[1], 1024):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i : i + 1024]), format="fltp", layout="mono")
        af.sample_rate, af.pts = 48000, i
        c.mux(a.encode(af))
    c.mux(a.encode(None))
    c.close()
    assert has_audio(path)
    au = load_audio(path, sample_rate=16000)
    assert au.duration == pytest.approx(1.0, abs=0.06)
    assert _peak_hz(au.samples[3200:12800], 16000) == pytest.approx(500, abs=3)


def test_resample_method_roundtrip() -> None:
    a = Audio(_tones(48000, 0.5, (440.0,))[0], 48000)
    b = a.resample(16000)
    assert b.sample_rate == 16000 and b.samples.ndim == 1
    assert b.num_samples == pytest.approx(8000, abs=64)
    assert _peak_hz(b.samples[800:7200], 16000) == pytest.approx(440, abs=3)
    assert a.resample(48000) is a


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_speech_from_espeak(tmp_path: Path) -> None:
    wav = tmp_path / "speech é.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello, this is a test"], check=True, capture_output=True)
    with wave.open(str(wav)) as w:
        native = w.getnframes() / w.getframerate()
    a = load_audio(wav, sample_rate=16000)
    assert a.duration == pytest.approx(native, abs=0.01)
    assert np.sqrt(np.mean(a.samples**2)) > 0.01  # there is speech, not silence


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "corrupt.mp3"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError):
        load_audio(junk)
    txt = tmp_path / "notes.txt"
    txt.write_text("not audio\n" * 50)
    with pytest.raises(InputError, match="cannot read|no audio stream"):  # FFmpeg may read text as "tty" video
        load_audio(txt)
    with pytest.raises(InputError, match="folder"):
        load_audio(tmp_path)
    empty = _write_wav(tmp_path / "empty.wav", np.zeros((1, 0), np.float32), 16000)
    with pytest.raises(InputError, match="no samples"):
        load_audio(empty)


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
    for i in range(3):
        f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        f.pts = i
        c.mux(v.encode(f))
    c.mux(v.encode(None))
    c.close()
    assert not has_audio(path)
    with pytest.raises(InputError, match="no audio stream"):
        load_audio(path)
