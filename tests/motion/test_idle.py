"""Idle head motion: bounded, smooth, repeatable, and nodding with speech emphasis."""

import numpy as np

from real3d.motion.idle import IdleConfig, idle_motion


def test_shapes_bounds_and_repeatability():
    rot, trans = idle_motion(500, 25.0, seed=3)
    assert rot.shape == trans.shape == (500, 3) and rot.dtype == np.float32
    assert np.abs(np.rad2deg(rot)).max() <= IdleConfig().max_deg
    np.testing.assert_array_equal(rot, idle_motion(500, 25.0, seed=3)[0])
    assert not np.array_equal(rot, idle_motion(500, 25.0, seed=4)[0])
    empty = idle_motion(0, 25.0)
    assert empty[0].shape == empty[1].shape == (0, 3)


def test_motion_is_slow_and_of_the_configured_size():
    rot, _ = idle_motion(3000, 25.0, seed=0)
    deg = np.rad2deg(rot)
    # frame-to-frame steps are far smaller than the sway itself: smooth, not jitter
    assert np.abs(np.diff(deg, axis=0)).mean() < 0.1 * deg.std(0).mean()
    np.testing.assert_allclose(deg.std(0), IdleConfig().sway_deg, rtol=0.5)


def test_emphasis_pushes_the_chin_down():
    n, fps = 400, 25.0
    emphasis = np.zeros(n)
    emphasis[200:206] = 1.0  # one stressed syllable
    calm, _ = idle_motion(n, fps, seed=1)
    nod, _ = idle_motion(n, fps, emphasis=emphasis, seed=1)
    extra = np.rad2deg(nod[:, 0] - calm[:, 0])
    assert extra[195:215].max() > 0.5 and np.abs(extra[:150]).max() < 0.05  # a nod there, nothing before
