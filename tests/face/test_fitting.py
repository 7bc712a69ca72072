"""Landmark fitting: frame conventions, loss pieces, and recovery of known coefficients from synthetic landmarks.

Recovery bounds measured on the synthetic BFM (800 vertices) with id/exp ~ N(0, 0.2^2) and poses up to
~20 deg: landmark RMSE 0.04 (image) / 0.09 (10-frame video) px @224, euler error 0.32 / 0.49 deg, mean vertex
error 0.92 mm; the asserts leave margin (0.5 px, 1 deg, 1.5 mm). Identity and
expression coefficients themselves are not identifiable from 460 landmarks (the bases overlap, and
depth trades against face size), so the test bounds the reconstructed geometry instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from real3d.errors import InputError
from real3d.face.bfm import ParametricFace
from real3d.face.bfm_synthetic import write_synthetic_bfm
from real3d.face.fitting import (
    IMAGE_FIT,
    VIDEO_FIT,
    LandmarkFitConfig,
    fit_image,
    fit_landmarks,
    fit_video,
    landmark_weights,
    laplacian_loss,
    to_fit_frame,
)


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> ParametricFace:
    return ParametricFace.from_dir(write_synthetic_bfm(tmp_path_factory.mktemp("bfm"), n_vertices=800))


def _synthetic(face, frames: int, amp: float, size: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames)[:, None]
    idc = amp * torch.randn(1, 80, generator=g)
    exp = amp * (torch.randn(1, 64, generator=g) + torch.randn(1, 64, generator=g) * torch.sin(math.pi * t))
    euler = torch.tensor([[0.1, -0.25, 0.05]]) + 0.1 * torch.sin(math.pi * t + torch.tensor([0.0, 1.0, 2.0]))
    trans = torch.tensor([[0.05, -0.1, 0.3]]) + 0.05 * torch.cos(math.pi * t + torch.tensor([0.0, 1.0, 2.0]))
    uv = face.project_keypoints(idc.expand(frames, -1), exp, euler, trans, "mp468")  # y up, 224 px
    px = torch.stack([uv[..., 0], 224 - uv[..., 1]], -1) * (size / 224)  # y down, `size` px
    return idc, exp, euler, trans, px.numpy()


def _errors(face, fit, idc, exp, euler):
    t = exp.shape[0]
    v_true = face.vertices(idc.expand(t, -1), exp)
    v_fit = face.vertices(fit.id.expand(t, -1), fit.exp)
    euler_deg = float((fit.euler - euler).abs().max()) * 180 / math.pi
    vert_mm = float((v_true - v_fit).norm(dim=-1).mean()) * 100  # decimetres -> mm
    return euler_deg, vert_mm


def test_to_fit_frame_flips_and_rescales():
    lm = np.zeros((2, 478, 3), np.float32)
    lm[:, 0] = [100.0, 50.0, 7.0]
    out = to_fit_frame(lm, 448)
    assert out.shape == (2, 468, 2)
    torch.testing.assert_close(out[:, 0], torch.tensor([[50.0, 199.0]] * 2))  # (x, (448 - y)) / 2


@pytest.mark.parametrize(
    "lm, size, match",
    [
        (np.zeros((1, 468, 2)), (480, 640), "square"),
        (np.zeros((1, 68, 2)), 512, "468"),
        (np.zeros((0, 468, 2)), 512, "468"),
        (np.full((1, 468, 2), np.nan), 512, "NaN"),
    ],
)
def test_bad_landmarks(lm, size, match):
    with pytest.raises(InputError, match=match):
        to_fit_frame(lm, size)


def test_bad_calls(face, tmp_path):
    with pytest.raises(InputError, match="one face"):
        fit_image(face, np.zeros((2, 468, 2)), 512)
    no_mp = ParametricFace.from_dir(write_synthetic_bfm(tmp_path, n_vertices=600), with_mediapipe=False)
    with pytest.raises(InputError, match="mediapipe"):
        fit_landmarks(no_mp, torch.zeros(1, 468, 2))
    with pytest.raises(InputError, match=r"\[T,468,2\]"):
        fit_landmarks(face, torch.zeros(1, 468, 3))


def test_landmark_weights_are_the_official_ones():
    img, vid = landmark_weights(IMAGE_FIT), landmark_weights(VIDEO_FIT)
    # eye corner, upper eyelid, lips (inner, outer), silhouette, nose tip
    for idx, w_img, w_vid in [
        (33, 5, 3),
        (263, 5, 3),
        (159, 5, 20),
        (386, 5, 20),
        (246, 5, 3),
        (13, 2, 5),
        (0, 2, 5),
        (17, 2, 5),
        (234, 0, 0),
        (454, 0, 0),
        (1, 1, 1),
    ]:
        assert (img[idx].item(), vid[idx].item()) == (w_img, w_vid), idx
    assert int((vid == 20).sum()) == 10 and int((img == 0).sum()) == 8 and int((img == 5).sum()) == 32


def test_laplacian_loss():
    assert laplacian_loss(torch.ones(5, 4)) == 0
    ramp = torch.arange(6.0)[:, None]  # interior second differences vanish; replicated edges give -0.5 / +0.5
    torch.testing.assert_close(laplacian_loss(ramp), torch.tensor(0.5 / 6))
    torch.testing.assert_close(laplacian_loss(torch.randn(1, 80)), torch.tensor(0.0))  # a shared id


def test_stage_one_fits_pose_only(face):
    _, _, euler, trans, px = _synthetic(face, 1, amp=0.0)
    fit = fit_image(face, px[0], 512, LandmarkFitConfig(stage2_iters=0, lambda_lap=0.0))
    assert fit.id.abs().max() == 0 and fit.exp.abs().max() == 0
    assert float((fit.euler - euler).abs().max()) * 180 / math.pi < 0.1
    assert fit.landmark_rmse < 0.05


def test_image_fit_recovers_known_coefficients(face):
    idc, exp, euler, trans, px = _synthetic(face, 1, amp=0.2)
    fit = fit_image(face, px[0], 512)
    euler_deg, vert_mm = _errors(face, fit, idc, exp, euler)
    assert fit.id.shape == (1, 80) and fit.exp.shape == (1, 64) and fit.euler.shape == (1, 3)
    assert fit.landmark_rmse < 0.5, fit.landmark_rmse
    assert euler_deg < 1.0, euler_deg
    assert vert_mm < 1.5, vert_mm
    assert float((fit.trans[:, :2] - trans[:, :2]).abs().max()) < 0.01  # in-plane translation (dm)


def test_video_fit_recovers_known_coefficients(face):
    idc, exp, euler, trans, px = _synthetic(face, 10, amp=0.2, seed=1)
    fit = fit_video(face, px, 512)
    euler_deg, vert_mm = _errors(face, fit, idc, exp, euler)
    assert fit.id.shape == (1, 80) and fit.exp.shape == (10, 64) and fit.trans.shape == (10, 3)
    assert fit.landmark_rmse < 0.5, fit.landmark_rmse
    assert euler_deg < 1.0, euler_deg
    assert vert_mm < 1.5, vert_mm


@pytest.mark.gpu
def test_cuda_fit_matches_cpu(face):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _, _, _, _, px = _synthetic(face, 4, amp=0.2)
    cpu = fit_video(face, px, 512)
    gpu = fit_video(face, px, 512, LandmarkFitConfig(device="cuda"))
    assert gpu.euler.device.type == "cpu"
    torch.testing.assert_close(gpu.euler, cpu.euler, atol=2e-3, rtol=0)
    assert abs(gpu.landmark_rmse - cpu.landmark_rmse) < 0.05
