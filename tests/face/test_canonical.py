import numpy as np

from real3d.face import topology as topo
from real3d.face.canonical import head_frame, kabsch
from real3d.geometry import euler_to_matrix, matrix_to_euler


def test_euler_round_trip():
    rng = np.random.default_rng(0)
    e = rng.uniform([-1, -1.4, -3], [1, 1.4, 3], size=(50, 3))
    r = euler_to_matrix(e)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(r), e, atol=1e-9)


def test_euler_axes():
    # yaw = rotation about the image y axis: +x goes toward -z (toward the camera) for positive yaw
    r = euler_to_matrix(np.array([0.0, np.pi / 2, 0.0]))
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 0, -1], atol=1e-12)
    r = euler_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_kabsch_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    r = euler_to_matrix(np.array([0.2, -0.3, 0.1]))
    dst = 1.7 * src @ r.T + [3.0, -2.0, 0.5]
    rot, s, t = kabsch(src, dst)
    np.testing.assert_allclose(rot, r, atol=1e-10)
    assert abs(s - 1.7) < 1e-10
    np.testing.assert_allclose(t, [3.0, -2.0, 0.5], atol=1e-10)


def test_head_frame_round_trip_and_units(astronaut_landmarks):
    lm = astronaut_landmarks
    f = head_frame(lm)
    q = f.to_canonical(lm)
    np.testing.assert_allclose(f.to_image(q), lm, atol=1e-9)
    # unit = outer eye corner distance
    assert abs(np.linalg.norm(q[263] - q[33]) - 1.0) < 1e-9
    # canonical x points from the subject's right eye (image left) to the left eye
    assert q[263, 0] > q[33, 0]
    # chin below the nose in canonical y
    assert q[topo.CHIN, 1] > q[topo.NOSE_TIP, 1]


def test_head_frame_is_equivariant_to_pose(astronaut_landmarks):
    """Rotating/scaling/shifting the face rotates its frame the same way; canonical coords do not change."""
    lm = astronaut_landmarks
    f0 = head_frame(lm)
    r = euler_to_matrix(np.array([0.15, 0.35, -0.1]))
    c = lm[list(topo.RIGID)].mean(0)
    moved = (lm - c) @ r.T * 1.3 + c + [20, -10, 0]
    f1 = head_frame(moved)
    np.testing.assert_allclose(f1.rotation, r @ f0.rotation, atol=1e-9)
    np.testing.assert_allclose(f1.to_canonical(moved), f0.to_canonical(lm), atol=1e-9)
