"""Pose processing for the neural backend: indexing, depth fix, map_to_init_pose, smoothing, keypoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from real3d.errors import InputError
from real3d.geometry import camera_from_pose
from real3d.motion.cameras import (
    PoseSequence,
    driving_pose,
    map_to_init_pose,
    mirror_indices,
    pose_from_sequence,
    smooth_cameras,
    smooth_features,
    static_pose,
    torso_keypoints,
)


def _poses(n: int, noise: float = 0.0, seed: int = 0) -> PoseSequence:
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]
    euler = torch.cat([0.1 * torch.sin(3 * t), 0.3 * torch.sin(2 * t), 0.05 * t], 1)
    trans = torch.cat([0.1 * t, -0.05 * t, 0.2 * torch.cos(t)], 1)
    euler = euler + noise * torch.randn(n, 3, generator=g, dtype=torch.float64)
    trans = trans + noise * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return PoseSequence(euler=euler, trans=trans)


def test_mirror_and_ping_pong_indices():
    np.testing.assert_array_equal(mirror_indices(8, 3), [0, 1, 2, 2, 1, 0, 0, 1])
    np.testing.assert_array_equal(mirror_indices(3, 1), [0, 0, 0])
    seq = _poses(3)
    mirrored = pose_from_sequence(seq.euler, seq.trans, 8)
    np.testing.assert_array_equal(mirrored.euler.numpy(), seq.euler[[0, 1, 2, 2, 1, 0, 0, 1]].numpy())
    pp = pose_from_sequence(seq.euler, seq.trans, 6, indexing="ping_pong")
    np.testing.assert_array_equal(pp.trans.numpy(), seq.trans[[0, 1, 2, 1, 0, 1]].numpy())
    with pytest.raises(InputError):
        mirror_indices(3, 0)


def test_static_pose_repeats_the_source():
    e, t = torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[0.0, 0.1, 0.5]])
    pose = driving_pose(e, t, 5)
    assert len(pose) == 5
    np.testing.assert_array_equal(pose.euler.numpy(), e.repeat(5, 1).numpy())
    np.testing.assert_array_equal(pose.trans.numpy(), t.repeat(5, 1).numpy())
    assert torch.equal(static_pose(e[0], t[0], 2).euler, e.repeat(2, 1))


def test_map_to_init_pose_after_depth_fix():
    seq = _poses(10, noise=0.01)
    src_e = torch.tensor([[0.05, -0.1, 0.02]], dtype=torch.float64)
    src_t = torch.tensor([[0.01, 0.02, 0.3]], dtype=torch.float64)
    pose = driving_pose(src_e, src_t, 14, pose=seq)
    np.testing.assert_allclose(pose.euler[0].numpy(), src_e[0].numpy(), atol=1e-15)
    np.testing.assert_allclose(pose.trans[0].numpy(), src_t[0].numpy(), atol=1e-15)
    np.testing.assert_allclose(pose.trans[:, 2].numpy(), np.full(14, 0.3), atol=1e-15)  # depth fixed
    idx = mirror_indices(14, 10)
    # additive offsets keep frame-to-frame differences
    np.testing.assert_allclose(
        (pose.euler - pose.euler[:1]).numpy(), (seq.euler[idx] - seq.euler[0]).numpy(), atol=1e-12
    )
    np.testing.assert_allclose(
        (pose.trans[:, :2] - pose.trans[:1, :2]).numpy(), (seq.trans[idx, :2] - seq.trans[0, :2]).numpy(), atol=1e-12
    )
    unmapped = driving_pose(src_e, src_t, 14, pose=seq, map_to_init=False)
    assert torch.equal(unmapped.euler, seq.euler[idx])
    mapped = map_to_init_pose(unmapped, src_e[0], src_t[0])
    assert torch.allclose(mapped.euler, pose.euler)


def test_smoothing_a_constant_camera_is_identity():
    e = torch.tensor([[0.2, -0.3, 0.1]], dtype=torch.float64).repeat(9, 1)
    t = torch.tensor([[0.05, 0.0, 0.4]], dtype=torch.float64).repeat(9, 1)
    cam = camera_from_pose(e, t)
    np.testing.assert_allclose(smooth_cameras(cam).numpy(), cam.numpy(), atol=1e-12)


def test_smoothing_matches_scipy_rotation_mean_and_reduces_jitter():
    clean, noisy = _poses(30), _poses(30, noise=0.02, seed=1)
    cam_clean, cam_noisy = clean.cameras(1), camera_from_pose(noisy.euler, noisy.trans)
    smooth = smooth_cameras(cam_noisy, 7)
    # reference: the official per-frame loop with scipy's Rotation.mean
    c = cam_noisy.numpy()
    for i in (0, 2, 15, 29):
        lo, hi = max(0, i - 3), min(30, i + 4)
        rot = c[lo:hi, :16].reshape(-1, 4, 4)[:, :3, :3]
        ref_r = Rotation.from_matrix(rot).mean().as_matrix()
        got = smooth[i, :16].reshape(4, 4).numpy()
        np.testing.assert_allclose(got[:3, :3], ref_r, atol=1e-10)
        np.testing.assert_allclose(got[:3, 3], c[lo:hi, :16].reshape(-1, 4, 4)[:, :3, 3].mean(0), atol=1e-12)
    np.testing.assert_array_equal(smooth[:, 16:].numpy(), cam_noisy[:, 16:].numpy())  # intrinsics kept

    def jitter(cam):
        c2w = cam[:, :16].reshape(-1, 4, 4)
        return (c2w[1:, :3, :] - c2w[:-1, :3, :]).norm(dim=(1, 2)).mean()

    assert jitter(smooth) < 0.5 * jitter(cam_noisy)
    err_before = (cam_noisy - cam_clean)[:, :12].abs().mean()
    err_after = (smooth - cam_clean)[:, :12].abs().mean()
    assert err_after < 0.6 * err_before
    assert smooth_cameras(cam_noisy.float()).dtype == torch.float32


def test_smooth_features_official_symmetric_padding():
    x = torch.arange(10, dtype=torch.float64)[:, None].repeat(1, 2)
    out = smooth_features(x, 7)
    padded = np.concatenate([[2, 1, 0], np.arange(10), [9, 8, 7]]).astype(np.float64)
    expected = np.convolve(padded, np.ones(7) / 7, mode="valid")
    np.testing.assert_allclose(out[:, 0].numpy(), expected, atol=1e-12)
    const = torch.full((6, 68, 2), 0.3)
    np.testing.assert_allclose(smooth_features(const).numpy(), const.numpy(), atol=1e-6)
    short = smooth_features(torch.tensor([[1.0], [3.0]]), 7)  # shorter than the pad: still defined
    assert short.shape == (2, 1) and torch.isfinite(short).all()
    with pytest.raises(InputError):
        smooth_features(x, 4)


def test_torso_keypoints():
    lm = torch.tensor([[[0.5, 0.5], [0.0, 1.0], [0.75, -0.2]]])
    kp = torso_keypoints(lm)
    np.testing.assert_allclose(kp[0].numpy(), [[0, 0, 0], [-1, 1, 0], [0.5, -1, 0]], atol=1e-7)
    with pytest.raises(InputError):
        torso_keypoints(lm[0])
