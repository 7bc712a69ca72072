"""The writer's background encoding thread: same bytes as a synchronous run, errors reach the caller, no
partial file, the caller may reuse its frame buffer."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest

from real3d.errors import OutputError
from real3d.io.audio import Audio
from real3d.io.writer import VideoWriter


def _frames(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """Gradients whose flat blue channel numbers the frame (20 levels apart, repeating after 12)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        np.stack([(xx * 2 + 5 * i) % 256, (yy * 3) % 256, np.full_like(xx, 15 + 20 * (i % 12))], -1).astype(np.uint8)
        for i in range(n)
    ]


def _same_video(a: np.ndarray, b: np.ndarray) -> None:
    """Same frames in the same order, up to libx264's run-to-run variation (it does not promise identical bytes
    from run to run, even on one thread): frame numbers (blue) exact to 3 levels, pictures to 1.5 on average."""
    assert a.shape == b.shape
    np.testing.assert_allclose(a[..., 2].mean(axis=(1, 2)), b[..., 2].mean(axis=(1, 2)), atol=3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.5


def _decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _tone(seconds: float, rate: int = 16000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def _invert(frame: np.ndarray) -> np.ndarray:
    return 255 - frame


def test_background_output_equals_synchronous(tmp_path):
    frames = _frames(30)
    outs = {}
    for background in (False, True):
        out = tmp_path / f"{background}.mp4"
        with VideoWriter(
            out,
            size=(96, 64),
            audio=_tone(1.5),
            frame_filter=_invert,
            quiet=True,
            background=background,
            queue_frames=2,
        ) as w:
            for f in frames:
                w.write(f)
        assert w.frames_written == 30
        outs[background] = out
    a, b = _decoded(outs[False]), _decoded(outs[True])
    assert a.shape == (30, 64, 96, 3)
    _same_video(a, b)
    assert np.abs(a.astype(int) - (255 - np.stack(frames).astype(int))).mean() < 3  # the filter ran, in order


def test_frames_are_encoded_off_the_calling_thread(tmp_path):
    threads = set()

    def spy(frame):
        threads.add(threading.current_thread().name)
        return frame

    with VideoWriter(tmp_path / "o.mp4", size=(96, 64), frame_filter=spy, quiet=True) as w:
        for f in _frames(3):
            w.write(f)
    assert threads and threading.current_thread().name not in threads


def test_caller_may_reuse_its_buffer(tmp_path):
    frames = _frames(8)
    buf = np.empty_like(frames[0])
    out = tmp_path / "reuse.mp4"
    with VideoWriter(out, size=(96, 64), quiet=True, queue_frames=8) as w:
        for f in frames:
            buf[:] = f
            w.write(buf)  # queued: the writer must have taken a copy
    ref = tmp_path / "ref.mp4"
    with VideoWriter(ref, size=(96, 64), quiet=True, background=False) as w:
        for f in frames:
            w.write(f)
    got = _decoded(out)
    _same_video(got, _decoded(ref))
    np.testing.assert_allclose(got[..., 2].mean(axis=(1, 2)), [15 + 20 * i for i in range(8)], atol=3)


class _FilterFailed(Exception):
    pass


def test_worker_error_reaches_the_caller_and_leaves_no_file(tmp_path):
    calls = []

    def failing(frame):
        calls.append(1)
        if len(calls) == 3:
            raise _FilterFailed("mark failed")
        return frame

    out = tmp_path / "out.mp4"
    with pytest.raises(_FilterFailed, match="mark failed"):
        with VideoWriter(out, size=(96, 64), frame_filter=failing, quiet=True, queue_frames=1) as w:
            for f in _frames(40):  # the error surfaces at a later write (or at close), never silently
                w.write(f)
    assert list(tmp_path.iterdir()) == []
    assert len(calls) == 3  # frames after the error were dropped, not encoded


def test_error_after_the_last_write_is_raised_by_close(tmp_path):
    def failing(frame):
        raise _FilterFailed("late")

    out = tmp_path / "out.mp4"
    w = VideoWriter(out, size=(96, 64), frame_filter=failing, quiet=True)
    w.open()
    w.write(_frames(1)[0])
    with pytest.raises(_FilterFailed, match="late"):
        w.close()
    assert list(tmp_path.iterdir()) == []


class _FullDisk:
    """A container whose muxer fails like a full disk."""

    def __init__(self, container):
        self.container = container

    def mux(self, packets):
        raise av.error.FFmpegError(28, "No space left on device")

    def close(self):
        self.container.close()


def test_encoder_failure_is_an_output_error(tmp_path):
    out = tmp_path / "out.mp4"
    w = VideoWriter(out, size=(96, 64), quiet=True)
    w.open()
    w._container = _FullDisk(w._container)
    w.write(_frames(1)[0])
    with pytest.raises(OutputError, match="encoding failed while writing .*No space left"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_abort_with_frames_queued_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, size=(96, 64), audio=_tone(3.0), quiet=True, queue_frames=4) as w:
            for f in _frames(6):
                w.write(f)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
