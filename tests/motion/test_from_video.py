"""Video driver on synthetic landmark tracks with known pose and expression."""

import numpy as np
import pytest

from real3d.errors import NoFaceError
from real3d.face import topology as topo
from real3d.face.canonical import head_frame
from real3d.geometry import euler_to_matrix
from real3d.motion.from_video import (
    RetargetConfig,
    enforce_no_crossing,
    fill_missing_landmarks,
    stream_track_from_landmarks,
    track_from_landmarks,
)
from real3d.motion.track import concatenate_tracks

NO_SMOOTH = RetargetConfig(expression_window=1, pose_window=1)


@pytest.fixture(scope="module")
def face():
    """Landmarks of a real face (the astronaut), pixels."""
    from skimage import data

    from real3d.face.landmarks import FaceAnalyzer

    with FaceAnalyzer() as fa:
        return fa.detect(data.astronaut())[0].landmarks.astype(np.float64)


def _posed(lm, euler, shift, scale):
    c = lm[list(topo.RIGID)].mean(0)
    return (lm - c) @ euler_to_matrix(np.asarray(euler)).T * scale + c + np.asarray(shift)


def _mouth_open(lm, frame, amount):
    """Open the mouth by `amount` canonical units: lower lip, chin and jaw move down in the face frame."""
    q = frame.to_canonical(lm)
    lower = sorted(set(topo.INNER_LIP_LOWER + topo.OUTER_LIP_LOWER) - set(topo.MOUTH_CORNERS) - {78, 308})
    q[lower, 1] += amount
    return frame.to_image(q)


def test_pose_is_recovered_and_expression_is_zero(face):
    poses = [((0, 0, 0), (0, 0, 0), 1.0), ((0.1, 0.3, -0.05), (12, -7, 0), 1.1), ((-0.2, -0.25, 0.1), (-5, 9, 0), 0.9)]
    lms = np.stack([_posed(face, *p) for p in poses])
    src = head_frame(face).to_canonical(face)
    tr = track_from_landmarks(lms, src, 25, NO_SMOOTH)
    for i, (euler, shift, scale) in enumerate(poses):
        np.testing.assert_allclose(tr.euler[i], euler, atol=1e-4)
        assert tr.trans[i, 2] == pytest.approx(np.log(scale), abs=1e-5)
    assert np.abs(tr.expression).max() < 1e-4
    # rotation about the rigid centroid: its image shift is the only translation
    iod = np.linalg.norm(face[263] - face[33])
    np.testing.assert_allclose(tr.trans[1, :2], np.array([12, -7]) / iod, atol=1e-4)


def test_expression_is_separated_from_pose(face):
    f = head_frame(face)
    opened = _mouth_open(face, f, 0.3)
    lms = np.stack([face, _posed(opened, (0.05, 0.4, 0.0), (3, 4, 0), 1.2)])
    tr = track_from_landmarks(lms, f.to_canonical(face), 25, NO_SMOOTH)
    np.testing.assert_allclose(tr.euler[1], (0.05, 0.4, 0.0), atol=2e-3)
    assert tr.expression[1, topo.LOWER_LIP_MID, 1] == pytest.approx(0.3, abs=0.01)
    assert abs(tr.expression[1, topo.NOSE_TIP]).max() < 0.01
    assert tr.mouth_open[1] > tr.mouth_open[0] + 0.25


def test_retargeting_scales_mouth_offsets_to_the_source(face):
    f = head_frame(face)
    q = f.to_canonical(face)
    # driver: the same face with a 1.5x wider mouth region
    wide = q.copy()
    mouth = sorted(set(topo.OUTER_LIP_UPPER + topo.OUTER_LIP_LOWER + topo.INNER_LIP_LOOP))
    c = q[mouth].mean(0)
    wide[mouth, 0] = c[0] + (q[mouth, 0] - c[0]) * 1.5
    drv0 = f.to_image(wide)
    smile = wide.copy()
    smile[list(topo.MOUTH_CORNERS), 0] += np.array([-0.15, 0.15])
    drv1 = f.to_image(smile)
    tr = track_from_landmarks(np.stack([drv0, drv1]), q, 25, NO_SMOOTH)
    dx = tr.expression[1, list(topo.MOUTH_CORNERS), 0]
    np.testing.assert_allclose(np.abs(dx), 0.15 / 1.5, rtol=0.08)


def test_lips_and_lids_never_cross():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 478, 3))
    out = enforce_no_crossing(q)
    for up, lo in ((topo.INNER_LIP_UPPER, topo.INNER_LIP_LOWER), (topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER)):
        assert (out[:, list(up), 1] <= out[:, list(lo), 1] + 1e-12).all()


def test_smoothing_has_no_lag(face):
    """A fast mouth opening keeps its timing after smoothing (zero-phase filter)."""
    f = head_frame(face)
    rng = np.random.default_rng(3)
    amounts = np.r_[np.zeros(20), np.linspace(0, 0.3, 4), np.full(20, 0.3)]
    lms = np.stack([_mouth_open(face, f, a) + rng.normal(0, 0.3, face.shape) for a in amounts])
    tr = track_from_landmarks(lms, f.to_canonical(face), 25)
    raw = track_from_landmarks(lms, f.to_canonical(face), 25, NO_SMOOTH)
    half = lambda m: int(np.argmax(m > 0.5 * (m[:5].mean() + m[-5:].mean())))  # noqa: E731
    assert abs(half(tr.mouth_open) - half(raw.mouth_open)) <= 1
    # and jitter is reduced
    assert np.std(np.diff(tr.mouth_open[:18])) < np.std(np.diff(raw.mouth_open[:18]))


def test_missing_frames_are_interpolated_and_all_missing_raises(face):
    from real3d.errors import NoFaceError

    lms = np.stack([face, face, face])
    lms[1] = np.nan
    tr = track_from_landmarks(lms, head_frame(face).to_canonical(face), 25, NO_SMOOTH)
    assert np.isfinite(tr.expression).all()
    with pytest.raises(NoFaceError):
        track_from_landmarks(np.full((3, 478, 3), np.nan), face, 25)


def test_driver_closing_its_mouth_closes_an_open_source(face):
    """The source was photographed with its mouth open (the astronaut smiles with her teeth, opened further);
    the driver starts open, then closes its lips, then opens wide: the output closes (lips together) on the
    closed frame and opens again with the driver."""
    from real3d.motion.mouth import closed_mouth, mouth_gap

    frame = head_frame(face)
    src_open = frame.to_canonical(_mouth_open(face, frame, 0.05))
    closed = frame.to_image(closed_mouth(frame.to_canonical(face)))
    drv = np.stack([face, closed, _mouth_open(face, frame, 0.15)])
    tr = track_from_landmarks(drv, src_open, 25.0, NO_SMOOTH)
    gap_drv = [mouth_gap(frame.to_canonical(d)) for d in drv]
    gap_out = [mouth_gap(src_open + e) for e in tr.expression]
    assert gap_drv[1] < 1e-6 and mouth_gap(src_open) > 0.14
    assert gap_out[1] < 1e-5  # (float32 offsets) the photo's open mouth is not kept when the driver closes
    assert gap_out[0] == pytest.approx(gap_drv[0], rel=0.3) and gap_out[2] > gap_out[0] + 0.1


def _noisy_track(face, n, seed):
    """n frames of the face turning and talking, with tracker noise."""
    f = head_frame(face)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 25
    talking = [_mouth_open(face, f, 0.1 + 0.1 * np.sin(7 * ti)) for ti in t]
    turns = [(0.1 * np.sin(ti), 0.3 * np.sin(2 * ti), 0) for ti in t]
    return np.stack([_posed(lm, e, (0, 0, 0), 1) + rng.normal(0, 0.3, face.shape) for lm, e in zip(talking, turns)])


def _assert_same_track(a, b):
    assert len(a) == len(b)
    for name in ("euler", "trans", "expression", "blink", "mouth_open"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("n", [1, 4, 6, 9, 10, 13, 14, 40])
def test_streamed_retargeting_equals_the_whole_track(face, n):
    """Chunked retargeting (as the mesh backend does while it renders) gives bit-identical frames, also for
    tracks shorter than the smoothing windows."""
    lms = _noisy_track(face, n, seed=n)
    src = head_frame(face).to_canonical(face)
    whole = track_from_landmarks(lms, src, 25)
    for size in (1, 3, 8, n):
        parts = list(stream_track_from_landmarks((lms[i : i + size] for i in range(0, n, size)), src, 25))
        assert sum(len(p) for p in parts) == n
        if n >= 40 and size < 9:  # frames come out while the input still streams in, a few frames behind it
            assert len(parts) > 2
        _assert_same_track(concatenate_tracks(parts), whole)


def test_streamed_retargeting_fills_faceless_frames_like_the_whole_track(face):
    lms = _noisy_track(face, 50, seed=1).astype(np.float32)
    for gap in (slice(0, 3), slice(10, 14), slice(20, 21), slice(22, 30), slice(46, 50)):
        lms[gap] = np.nan
    src = head_frame(face).to_canonical(face)
    # the whole track is built from landmarks filled (in float64) and stored as float32, as TrackedVideo holds them
    whole = track_from_landmarks(fill_missing_landmarks(lms.astype(np.float64)).astype(np.float32), src, 25)
    for size in (1, 4, 9, 50):
        parts = stream_track_from_landmarks((lms[i : i + size] for i in range(0, 50, size)), src, 25)
        _assert_same_track(concatenate_tracks(list(parts)), whole)
    with pytest.raises(NoFaceError, match="no face was found"):
        list(stream_track_from_landmarks([np.full((5, 478, 3), np.nan, np.float32)], src, 25))
