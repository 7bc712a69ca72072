"""`track_video` decodes ahead in a background thread: the landmarks equal a plain sequential tracking of the
same frames, progress comes in order from the caller's thread, and the decoder's errors reach the caller."""

from __future__ import annotations

import threading
from itertools import islice

import numpy as np
import pytest
from skimage import data

from real3d.errors import InputError
from real3d.face.landmarks import FaceAnalyzer
from real3d.io.video import iter_frames
from real3d.io.writer import VideoWriter
from real3d.motion import driving
from real3d.motion.driving import DRIVER_MAX_SIDE, track_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s at 25 fps of the astronaut's face drifting right and down by one pixel per frame."""
    face = data.astronaut()[0:320, 60:380]
    path = tmp_path_factory.mktemp("drv") / "drift.mp4"
    with VideoWriter(path, fps=25, size=(256, 256), quiet=True) as w:
        for i in range(50):
            w.write(np.ascontiguousarray(face[20 - i // 3 : 276 - i // 3, 30 - i // 2 : 286 - i // 2]))
    return path


def test_landmarks_equal_sequential_tracking(clip):
    calls = []
    got = track_video(
        clip, 25, 40, progress=lambda done, total: calls.append((done, total, threading.current_thread()))
    )
    with FaceAnalyzer() as analyzer:
        ref = [analyzer.track(f) for f in islice(iter_frames(clip, max_size=DRIVER_MAX_SIDE, fps=25), 40)]
    assert got.landmarks.shape == (40, 478, 3) and all(r is not None for r in ref)
    np.testing.assert_array_equal(got.landmarks, np.stack(ref))  # same frames, same tracker: bit-identical
    assert [(d, t) for d, t, _ in calls] == [(i, 40) for i in range(1, 41)]
    assert {th for _, _, th in calls} == {threading.current_thread()}
    # the face drifts by ~(+0.5, +0.33) px per frame: the track follows it
    shift = got.landmarks[-1, :, :2].mean(0) - got.landmarks[0, :, :2].mean(0)
    assert 10 < shift[0] < 30 and 6 < shift[1] < 20


@pytest.mark.parametrize("read", ["track", "chunks"])
def test_decoder_error_reaches_the_caller(clip, monkeypatch, read):
    def broken(*args, **kwargs):
        yield from islice(iter_frames(clip), 3)
        raise InputError("cannot decode drift.mp4 (after 3 frames): the file may be truncated")

    monkeypatch.setattr(driving, "iter_frames", broken)
    video = driving.DrivingVideo.open(clip, 25)
    with pytest.raises(InputError, match="after 3 frames"):
        video.track() if read == "track" else list(video.chunks())


def test_chunks_give_the_same_landmarks(clip):
    video = driving.DrivingVideo.open(clip, 25, 30)
    assert video.n_frames == 30
    chunks = list(video.chunks(size=7))
    assert [len(c) for c in chunks] == [7, 7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), track_video(clip, 25, 30).landmarks)


def test_stopping_chunks_early_stops_the_decoder(clip):
    before = {t.name for t in threading.enumerate()}
    chunks = driving.DrivingVideo.open(clip, 25).chunks(size=4)
    assert next(chunks).shape == (4, 478, 3)
    chunks.close()
    assert not {t.name for t in threading.enumerate()} - before  # the decoder thread is gone
