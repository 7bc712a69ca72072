"""Video reading: probe, streaming frames, display rotation, VFR resampling, bad input."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from real3d.errors import InputError
from real3d.io.video import (
    count_frames,
    frame_timestamps,
    iter_frames,
    iter_timed_frames,
    probe_video,
    resample_indices,
)


def _write_video(
    path: Path,
    frames: list[np.ndarray],
    times_ms: list[int] | None = None,
    fps: int = 25,
    rotation: int = 0,
    audio: bool = False,
    codec: str = "libx264",
) -> Path:
    """Encode RGB frames with PyAV directly (independent of the project's writer)."""
    h, w = frames[0].shape[:2] if frames else (32, 48)
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"crf": "10", "preset": "ultrafast"} if codec == "libx264" else {}
    if times_ms is not None:
        s.codec_context.time_base = Fraction(1, 1000)
        s.time_base = Fraction(1, 1000)
    if rotation:
        s.set_display_rotation(rotation)
    if audio:
        a = c.add_stream("aac", rate=16000)
    for i, img in enumerate(frames):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = times_ms[i] if times_ms is not None else i
        c.mux(s.encode(f))
    c.mux(s.encode(None))
    if audio:
        n = int(16000 * len(frames) / fps)
        tone = (0.2 * np.sin(2 * np.pi * 300 * np.arange(n) / 16000)).astype(np.float32)[None]
        af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        af.sample_rate = 16000
        af.pts = 0
        c.mux(a.encode(af))
        c.mux(a.encode(None))
    c.close()
    return path


def _grey_frames(n: int, h: int = 32, w: int = 48) -> list[np.ndarray]:
    """Frame i is uniformly grey at level 20 + 8 i (identifies the frame after lossy coding)."""
    return [np.full((h, w, 3), 20 + 8 * i, np.uint8) for i in range(n)]


def _level(img: np.ndarray) -> int:
    return int(round((float(img.mean()) - 20) / 8))


def test_probe_and_iter_constant_rate(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "clip.mp4", _grey_frames(12), fps=25, audio=True)
    info = probe_video(path)
    assert info.fps == pytest.approx(25.0)
    assert info.num_frames == 12 and info.frames_exact
    assert (info.width, info.height) == (48, 32)
    assert info.duration == pytest.approx(12 / 25, abs=1e-6)
    assert info.has_audio and info.rotation == 0 and info.codec == "h264"
    frames = list(iter_frames(path))
    assert len(frames) == 12
    assert all(f.shape == (32, 48, 3) and f.dtype == np.uint8 for f in frames)
    assert [_level(f) for f in frames] == list(range(12))


def test_max_size_keeps_aspect(tmp_path: Path) -> None:
    img = np.zeros((64, 128, 3), np.uint8)
    img[:, :64] = 200  # left half bright
    path = _write_video(tmp_path / "wide.mp4", [img] * 3)
    frames = list(iter_frames(path, max_size=32))
    assert frames[0].shape == (16, 32, 3)
    assert frames[0][:, :14].mean() > 180 and frames[0][:, 18:].mean() < 30
    assert list(iter_frames(path, max_size=500))[0].shape == (64, 128, 3)  # never upscaled


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path: Path, rotation: int) -> None:
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8, :8] = 255  # a bright top-left corner marker in the stored picture
    path = _write_video(tmp_path / f"rot{rotation}.mp4", [img] * 2, rotation=rotation)
    info = probe_video(path)
    assert info.rotation == rotation % 360
    expected = np.rot90(img, k=(rotation // 90) % 4)  # counter-clockwise, as players display it
    frame = next(iter_frames(path))
    assert frame.shape == expected.shape
    assert (info.width, info.height) == (expected.shape[1], expected.shape[0])
    bright = np.argwhere(frame.mean(axis=2) > 128).mean(axis=0)
    want = np.argwhere(expected.mean(axis=2) > 128).mean(axis=0)
    np.testing.assert_allclose(bright, want, atol=1.5)


def test_vfr_timestamps_and_resampling(tmp_path: Path) -> None:
    times = [0, 40, 100, 120, 300, 310, 500]  # ms, irregular
    path = _write_video(tmp_path / "vfr.mkv", _grey_frames(len(times)), times_ms=times)
    ts = frame_timestamps(path)
    np.testing.assert_allclose(ts, np.array(times) / 1000, atol=1e-3)
    timed = list(iter_timed_frames(path))
    np.testing.assert_allclose([t for t, _ in timed], np.array(times) / 1000, atol=1e-3)
    # Resample to 10 fps over 0.6 s: output times 0, .1, ..., .5 -> nearest source frames.
    idx = resample_indices(ts, 10.0, 0.6)
    assert idx.tolist() == [0, 2, 3, 4, 5, 6]
    out = list(iter_frames(path, fps=10.0))
    info = probe_video(path)
    assert len(out) == round(info.duration * 10)
    assert [_level(f) for f in out] == resample_indices(ts, 10.0, info.duration).tolist()


@pytest.mark.parametrize("fps", [None, 10.0, 25.0, 30.0, 60.0])
def test_count_frames_is_what_iter_frames_yields(tmp_path: Path, fps: float | None) -> None:
    times = [0, 40, 100, 120, 300, 310, 500]
    vfr = _write_video(tmp_path / "vfr.mkv", _grey_frames(len(times)), times_ms=times)
    cfr = _write_video(tmp_path / "cfr.mp4", _grey_frames(13), fps=25)
    for path in (vfr, cfr):
        assert count_frames(path, fps) == len(list(iter_frames(path, fps=fps)))


def test_resample_indices_rates() -> None:
    src = np.arange(30) / 30.0  # one second at 30 fps
    idx = resample_indices(src, 25.0, 1.0)
    assert len(idx) == 25 and idx[0] == 0 and np.all(np.diff(idx) >= 1)
    np.testing.assert_allclose(src[idx], np.arange(25) / 25, atol=1 / 60 + 1e-9)
    up = resample_indices(np.arange(10) / 10.0, 25.0, 1.0)
    assert len(up) == 25 and np.all(np.diff(up) >= 0) and up[-1] == 9
    assert resample_indices(np.array([0.0]), 25.0, 0.2).tolist() == [0] * 5
    with pytest.raises(ValueError):
        resample_indices(np.array([]), 25.0, 1.0)


@pytest.mark.parametrize("name", ["with space.mp4", "vidéo ñ 日本.mp4"])
def test_paths_with_spaces_and_non_ascii(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "dir with spaces é"
    folder.mkdir()
    path = _write_video(folder / name, _grey_frames(4))
    assert probe_video(path).num_frames == 4
    assert [_level(f) for f in iter_frames(str(path))] == [0, 1, 2, 3]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        probe_video(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="not found"):
        list(iter_frames(tmp_path / "nope.mp4"))


def test_not_a_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(InputError, match="cannot read"):
        probe_video(junk)
    with pytest.raises(InputError, match="folder"):
        probe_video(tmp_path)


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.m4a"
    c = av.open(str(path), "w")
    a = c.add_stream("aac", rate=16000)
    af = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
    af.sample_rate, af.pts = 16000, 0
    c.mux(a.encode(af))
    c.mux(a.encode(None))
    c.close()
    with pytest.raises(InputError, match="no video stream"):
        probe_video(path)


def test_zero_frames_and_truncated(tmp_path: Path) -> None:
    # A container opened for writing and closed without frames: the muxer drops the empty track.
    path = tmp_path / "empty.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    c.start_encoding()
    c.close()
    with pytest.raises(InputError, match="no video"):
        probe_video(path)
    with pytest.raises(InputError, match="no video"):
        list(iter_frames(path))
    # The first kilobyte of a real video: header without the frames.
    full = _write_video(tmp_path / "full.mp4", _grey_frames(30, 64, 64))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[:1024])
    with pytest.raises(InputError):
        probe_video(cut)


def test_streaming_is_lazy(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "clip.mp4", _grey_frames(10))
    it = iter_frames(path)
    assert _level(next(it)) == 0 and _level(next(it)) == 1
    it.close()  # closes the container early without error
