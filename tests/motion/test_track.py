"""MotionTrack shape checks, slicing, pose swaps, and MotionStream chunking."""

import numpy as np
import pytest

from real3d.motion.track import MotionStream, MotionTrack, ping_pong_indices


def _track(n: int, start: float = 0.0) -> MotionTrack:
    t = MotionTrack.still(n, 25)
    t.euler[:, 1] = start + np.arange(n)
    t.mouth_open[:] = np.arange(n)
    return t


def test_still_track_and_shape_checks():
    t = MotionTrack.still(4, 30)
    assert len(t) == 4 and t.duration == pytest.approx(4 / 30)
    assert not t.expression.any() and t.expression.shape == (4, 478, 3)
    with pytest.raises(ValueError, match="blink has shape"):
        MotionTrack(25, t.euler, t.trans, t.expression, np.zeros(3), t.mouth_open)
    with pytest.raises(ValueError, match="fps must be positive"):
        MotionTrack(0, t.euler, t.trans, t.expression, t.blink, t.mouth_open)


def test_slice_pose_swap_and_still():
    t = _track(6)
    s = t.slice(2, 5)
    assert len(s) == 3 and list(s.mouth_open) == [2, 3, 4]
    posed = t.with_pose_of(_track(3, start=10))
    assert list(posed.euler[:, 1]) == [10, 11, 12, 11, 10, 11] and list(posed.mouth_open) == list(range(6))
    assert not t.without_pose().euler.any() and t.without_pose().mouth_open[5] == 5


def test_ping_pong_indices():
    assert list(ping_pong_indices(7, 3)) == [0, 1, 2, 1, 0, 1, 2]
    assert list(ping_pong_indices(3, 1)) == [0, 0, 0]
    with pytest.raises(ValueError):
        ping_pong_indices(3, 0)


def test_stream_cuts_to_its_length_and_takes_a_pose_across_chunks():
    chunks = [_track(4), _track(4, start=4), _track(4, start=8)]
    stream = MotionStream(10, iter(chunks))
    got = list(stream)
    assert [len(c) for c in got] == [4, 4, 2] and len(stream) == 10
    posed = MotionStream(10, iter([_track(4), _track(4, start=4), _track(4, start=8)])).with_pose_of(_track(3, 20))
    yaw = np.concatenate([c.euler[:, 1] for c in posed])
    assert list(yaw) == [20, 21, 22, 21, 20, 21, 22, 21, 20, 21]  # ping-pong continues over chunk borders


@pytest.mark.parametrize("wrap", ["plain", "posed", "still"])
def test_stream_closes_its_source_when_cut_short(wrap):
    """A producer behind the stream (the mesh backend's tracking thread) stops as soon as the frames are done."""
    closed = []

    def source():
        try:
            for start in range(0, 100, 4):
                yield _track(4, start=start)
        finally:
            closed.append(True)

    stream = MotionStream(6, source())
    stream = {"plain": stream, "posed": stream.with_pose_of(_track(3, 20)), "still": stream.without_pose()}[wrap]
    assert [len(c) for c in stream] == [4, 2] and closed == [True]
