"""The streaming H.264 + AAC writer: stream properties checked with PyAV, atomic output, errors."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from real3d.errors import OutputError
from real3d.io.audio import Audio
from real3d.io.writer import VideoWriter, check_writable


def _frames(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """Moving gradient frames (RGB uint8 HxWx3)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        np.stack([(xx * 2 + 5 * i) % 256, (yy * 3) % 256, np.full_like(xx, 80 + i)], -1).astype(np.uint8)
        for i in range(n)
    ]


def _tone(seconds: float, rate: int = 16000, channels: int = 1) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return Audio(x if channels == 1 else np.stack([x] * channels), rate)


def _streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "size": (v.width, v.height),
            "fps": float(v.average_rate),
            "video_duration": float(v.duration * v.time_base),
            "frames": sum(1 for _ in c.decode(v)),
            "audio": None,
        }
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            info["audio"] = (a.codec_context.name, a.codec_context.sample_rate, float(a.duration * a.time_base))
    return info


@pytest.mark.parametrize(("audio_seconds", "rate"), [(3.0, 16000), (0.5, 44100), (1.2, 22000)])
def test_h264_aac_output(tmp_path: Path, audio_seconds: float, rate: int) -> None:
    """Audio longer than the video is trimmed, shorter is padded, odd rates are resampled."""
    out = tmp_path / "out.mp4"
    frames = _frames(30)
    with VideoWriter(out, fps=25, size=(96, 64), audio=_tone(audio_seconds, rate, channels=2), quiet=True) as w:
        for f in frames:
            w.write(f)
    info = _streams(out)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["size"] == (96, 64) and info["fps"] == pytest.approx(25.0)
    assert info["frames"] == 30
    assert info["video_duration"] == pytest.approx(30 / 25, abs=1e-6)
    codec, a_rate, a_dur = info["audio"]
    assert codec == "aac" and a_rate in (rate, 48000)
    assert a_dur == pytest.approx(30 / 25, abs=0.05)
    assert not [p for p in tmp_path.iterdir() if p.name != "out.mp4"]  # temp file renamed, nothing left over


def test_pixels_survive_without_marks(tmp_path: Path) -> None:
    out = tmp_path / "plain.mp4"
    frames = _frames(5)
    with VideoWriter(out, fps=30, size=(96, 64), crf=0, quiet=True) as w:
        for f in frames:
            w.write(f)
    with av.open(str(out)) as c:
        decoded = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
        assert float(c.streams.video[0].average_rate) == pytest.approx(30.0)
    assert len(decoded) == 5
    err = np.mean([np.abs(d.astype(float) - f).mean() for d, f in zip(decoded, frames)])
    assert err < 4.0  # only the yuv420p chroma subsampling loss remains at crf 0


def test_no_audio_and_fractional_fps(tmp_path: Path) -> None:
    out = tmp_path / "ntsc.mp4"
    with VideoWriter(out, fps=30000 / 1001, size=(96, 64), quiet=True) as w:
        for f in _frames(10):
            w.write(f)
    info = _streams(out)
    assert info["audio"] is None and info["frames"] == 10
    assert info["fps"] == pytest.approx(29.97, abs=0.01)


class _Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [_Boom, KeyboardInterrupt])
def test_no_partial_file_on_error(tmp_path: Path, exc: type[BaseException]) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(exc):
        with VideoWriter(out, fps=25, size=(96, 64), audio=_tone(2.0), quiet=True) as w:
            for i, f in enumerate(_frames(10)):
                if i == 6:
                    raise exc()
                w.write(f)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(_Boom):
        with VideoWriter(out, size=(96, 64), quiet=True) as w:
            w.write(_frames(1)[0])
            raise _Boom()
    assert out.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [out]


def test_unwritable_output(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(tmp_path / "missing" / "out.mp4")
    with pytest.raises(OutputError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", size=(96, 64), quiet=True).__enter__()
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(OutputError):
        check_writable(afile / "out.mp4")
    with pytest.raises(OutputError, match="folder"):
        check_writable(tmp_path)
    with pytest.raises(OutputError, match="unsupported"):
        check_writable(tmp_path / "out.gif")
    assert check_writable(tmp_path / "ok.mp4") == tmp_path / "ok.mp4"
    assert list(tmp_path.iterdir()) == [afile]  # the probe file is gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            check_writable(ro / "out.mp4")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("name", ["with space.mp4", "sortie é 日本.mp4"])
def test_paths_with_spaces_and_non_ascii(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "my vidéos"
    folder.mkdir()
    out = folder / name
    with VideoWriter(out, size=(96, 64), audio=_tone(0.2), quiet=True) as w:
        for f in _frames(4):
            w.write(f)
    assert _streams(out)["frames"] == 4


def test_bad_frames_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "o.mp4", size=(95, 64))
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(tmp_path / "o.mp4", size=(96, 64), quiet=True) as w:
            w.write(np.zeros((64, 64, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="no frames"):
        with VideoWriter(tmp_path / "o.mp4", size=(96, 64), quiet=True):
            pass
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with VideoWriter(tmp_path / "o.mp4", size=(96, 64), total=3) as w:
        for f in _frames(3):
            w.write(f)
    captured = capsys.readouterr()
    assert captured.out == "" and "frame" in captured.err
    with VideoWriter(tmp_path / "q.mp4", size=(96, 64), total=3, quiet=True) as w:
        for f in _frames(3):
            w.write(f)
    assert capsys.readouterr().err == ""


def _wav(path: Path, audio: Audio) -> Path:
    """Write `audio` as a 16-bit PCM wav with PyAV."""
    pcm = audio.channels_first()
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=audio.sample_rate)
        s.codec_context.layout = layout
        for a in range(0, pcm.shape[1], 4096):
            f = av.AudioFrame.from_ndarray(
                (pcm[:, a : a + 4096].T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout
            )
            f.sample_rate = audio.sample_rate
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (22000, 1)])
def test_audio_streamed_from_a_file_matches_decoded_audio(tmp_path: Path, rate: int, channels: int) -> None:
    """A file given as the soundtrack is decoded piece by piece while writing; the result equals muxing the
    same samples decoded up front (same rate choice, same length, same AAC frames)."""
    from real3d.io.audio import load_audio

    src = _wav(tmp_path / "tone.wav", _tone(2.0, rate, channels))
    outs = {}
    for kind, audio in (("path", src), ("array", load_audio(src, sample_rate=None, mono=False))):
        outs[kind] = tmp_path / f"{kind}.mp4"
        with VideoWriter(outs[kind], fps=25, size=(96, 64), audio=audio, quiet=True) as w:
            for f in _frames(30):
                w.write(f)
    a, b = _streams(outs["path"]), _streams(outs["array"])
    assert a["audio"] == b["audio"] and a["audio"][1] == (rate if rate == 44100 else 48000)
    assert a["audio"][2] == pytest.approx(30 / 25, abs=0.05)

    def samples(p: Path) -> np.ndarray:
        with av.open(str(p)) as c:
            return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)

    np.testing.assert_allclose(samples(outs["path"]), samples(outs["array"]), atol=1e-4)


def test_missing_or_silent_audio_file_leaves_no_output(tmp_path: Path) -> None:
    from real3d.errors import InputError

    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="not found"):
        with VideoWriter(out, size=(96, 64), audio=tmp_path / "nope.wav", quiet=True) as w:
            w.write(_frames(1)[0])
    video_only = tmp_path / "v.mp4"
    with VideoWriter(video_only, size=(96, 64), quiet=True) as w:
        w.write(_frames(1)[0])
    with pytest.raises(InputError, match="no audio stream"):
        with VideoWriter(out, size=(96, 64), audio=video_only, quiet=True) as w:
            w.write(_frames(1)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_audio_stream_reads_in_any_piece_size(tmp_path: Path) -> None:
    from real3d.io.audio import AudioStream, load_audio

    src = _wav(tmp_path / "tone.wav", _tone(1.3, 16000, 2))
    whole = load_audio(src, sample_rate=None, mono=False).samples
    with AudioStream(src) as s:
        assert (s.sample_rate, s.num_channels) == (16000, 2)
        parts = [s.read(n) for n in (1, 999, 4096, 7, 100000, 10)]
    assert [p.shape[1] for p in parts][-1] == 0
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    with AudioStream(src, sample_rate=8000, max_channels=1) as s:
        mono = np.concatenate([s.read(3000) for _ in range(5)], axis=1)
    assert mono.shape == (1, int(round(1.3 * 8000)))
