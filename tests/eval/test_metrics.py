"""Metrics against known values: identical inputs, shifted/blurred inputs, hand-computed cases, synthetic landmarks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import stats
from skimage import data

from real3d.errors import InputError
from real3d.eval import metrics as M
from real3d.face import topology as topo
from real3d.geometry import euler_to_matrix


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    return data.astronaut()[::2, ::2].copy()  # 256x256x3


# ------------------------------------------------------------------------------------------ pixels
def test_l1_psnr_known_offsets(astro):
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a + 10
    assert M.l1(a, b) == pytest.approx(10 / 255)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.13 dB
    assert M.psnr(astro, astro) == math.inf
    assert M.l1(astro, astro) == 0.0
    with pytest.raises(InputError):
        M.l1(a, a[:4])


def test_ssim_identical_is_one_and_degrades_with_blur_and_shift(astro):
    assert M.ssim(astro, astro) == pytest.approx(1.0, abs=1e-12)
    mild = cv2.GaussianBlur(astro, (0, 0), 1.0)
    strong = cv2.GaussianBlur(astro, (0, 0), 3.0)
    shifted = np.roll(astro, 4, axis=1)
    s_mild, s_strong, s_shift = M.ssim(astro, mild), M.ssim(astro, strong), M.ssim(astro, shifted)
    assert 1.0 > s_mild > s_strong > 0.2
    assert s_shift < 0.9
    # blur lowers PSNR monotonically too
    assert M.psnr(astro, mild) > M.psnr(astro, strong)


def test_ssim_constant_images_hand_computed():
    # constant images: variances and covariance are 0, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 100.0, 120.0
    c1 = (0.01 * 255) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    x = np.full((20, 20), a)
    y = np.full((20, 20), b)
    assert M.ssim(x, y) == pytest.approx(want, rel=1e-12)


def test_ssim_single_window_hand_computed():
    # an 11x11 image has exactly one valid window: SSIM = the formula on Gaussian-weighted statistics
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (11, 11)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    g1 = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g1, g1)
    w /= w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    got = M.ssim_map(x, y)
    assert got.shape == (1, 1)
    assert got[0, 0] == pytest.approx(want, rel=1e-10)


def test_ssim_matches_scikit_image_gaussian_variant(astro):
    from skimage.metrics import structural_similarity

    noisy = np.clip(astro + np.random.default_rng(1).normal(0, 12, astro.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(
        astro, noisy, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert M.ssim(astro, noisy) == pytest.approx(ref, abs=1e-9)


# --------------------------------------------------------------------------------------- landmarks
def _face(seed: int = 0) -> np.ndarray:
    """A synthetic 478-point 'face' (3-D points, pixels) with eyes 100 px apart and lips 20 px apart."""
    rng = np.random.default_rng(seed)
    lm = rng.normal(0, 40, (478, 3)) + np.array([256, 256, 0])
    lm[topo.RIGHT_EYE_OUTER] = [206, 220, 0]
    lm[topo.LEFT_EYE_OUTER] = [306, 220, 0]
    lm[topo.UPPER_LIP_MID] = [256, 300, 0]
    lm[topo.LOWER_LIP_MID] = [256, 320, 0]
    return lm


def test_akd_known_shift_and_scale():
    ref = np.stack([_face(0)] * 4)
    gen = ref.copy()
    gen[..., 0] += 3
    gen[..., 1] += 4  # every point moved by 5 px
    assert M.akd(gen, ref, width=512) == pytest.approx(5.0)
    assert M.akd(gen, ref, width=256) == pytest.approx(10.0)  # reported at 512 px
    # frames without a face on either side are skipped
    gen_missing = [None, gen[1], gen[2], None]
    assert M.akd(gen_missing, ref, width=512) == pytest.approx(5.0)
    assert M.detection_rate(gen_missing) == 0.5
    assert math.isnan(M.akd([None, None], ref[:2], width=512))


def test_mouth_opening_and_correlation():
    faces = []
    for gap in (10, 20, 30, 40):
        f = _face(0)
        f[topo.LOWER_LIP_MID, 1] = f[topo.UPPER_LIP_MID, 1] + gap
        faces.append(f)
    mo = M.mouth_opening(faces)
    np.testing.assert_allclose(mo, [0.1, 0.2, 0.3, 0.4])  # gap / 100 px inter-ocular
    # twice as large a face opening the same way: identical (scale-free) curve, correlation 1
    big = [2 * f for f in faces]
    np.testing.assert_allclose(M.mouth_opening(big), mo)
    assert M.mouth_correlation(big, faces) == pytest.approx(1.0)
    assert M.mouth_correlation(faces[::-1], faces) == pytest.approx(-1.0)
    assert math.isnan(M.mouth_correlation([faces[0]] * 4, faces))  # a constant curve has no correlation
    assert M.pearson([1, 2, np.nan, 4, 5], [2, 4, 7, 8, 10]) == pytest.approx(1.0)


def test_lagged_correlation_finds_the_lag():
    rng = np.random.default_rng(3)
    x = rng.normal(size=60)
    y = np.roll(x, 2)  # y[t] = x[t - 2]: x leads by 2 frames
    c, lag = M.lagged_correlation(x, y, max_lag=3)
    assert lag == -2 and c == pytest.approx(1.0)


def _rotated(lm: np.ndarray, deg_yaw: float, deg_pitch: float = 0.0) -> np.ndarray:
    r = euler_to_matrix(np.radians([deg_pitch, deg_yaw, 0.0]))
    c = lm.mean(0)
    return (lm - c) @ r.T + c


def test_head_pose_error_of_known_rotation():
    base = _face(1)
    gen = [_rotated(base, 10.0) + [5, -3, 2], _rotated(base, -4.0) * 1.3]  # translation/scale do not matter
    ref = [base, base]
    np.testing.assert_allclose(M.head_pose_error(gen, ref), [10.0, 4.0], atol=1e-6)
    err = M.head_pose_error([None, base], ref)
    assert math.isnan(err[0]) and err[1] == pytest.approx(0.0, abs=1e-6)


def test_relative_pose_error_ignores_identity():
    a, b = _face(1), _face(2)  # two different 'identities'
    yaws = [0.0, 5.0, 10.0, 15.0]
    driver = [_rotated(a, y) for y in yaws]
    faithful = [_rotated(b, y) for y in yaws]
    half = [_rotated(b, y / 2) for y in yaws]
    np.testing.assert_allclose(M.relative_pose_error(faithful, driver), 0.0, atol=1e-6)
    np.testing.assert_allclose(M.relative_pose_error(half, driver), [0.0, 2.5, 5.0, 7.5], atol=1e-6)


def test_landmark_jitter_known_values():
    base = _face(0)
    smooth = np.stack([base + [t * 2.0, 0, 0] for t in range(6)])  # constant velocity: no jitter
    assert M.landmark_jitter(smooth, width=512) == pytest.approx(0.0, abs=1e-9)
    shaky = np.stack([base + [(-1) ** t * 1.5, 0, 0] for t in range(6)])  # +-d alternation: |acc| = 4d
    assert M.landmark_jitter(shaky, width=512) == pytest.approx(6.0)
    assert M.landmark_jitter(shaky, width=256) == pytest.approx(12.0)


# ---------------------------------------------------------------------------------------- identity
def test_dlib_identity_same_image_and_flip(astro):
    full = data.astronaut()
    ident = M.DlibIdentity()
    d = ident.descriptor(full)
    assert d is not None and d.shape == (128,)
    s = ident.score(full, [full, full[:, ::-1].copy()])
    assert s.frames == 2
    # itself: cosine 1 / distance 0; its mirror image: still the same person by dlib's 0.6 rule
    assert s.csim > 0.95 and s.distance < 0.3
    same = ident.score(full, [full])
    assert same.csim == pytest.approx(1.0, abs=1e-6) and same.distance == pytest.approx(0.0, abs=1e-6)
    blank = np.full((200, 200, 3), 128, np.uint8)
    assert ident.descriptor(blank) is None
    none = ident.score(full, [blank])
    assert none.frames == 0 and math.isnan(none.csim)


def test_mean_ci95_student_t():
    iv = M.mean_ci95([1.0, 2.0, 3.0, float("nan")])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (iv.mean, iv.n) == (2.0, 3)
    assert iv.low == pytest.approx(2 - half) and iv.high == pytest.approx(2 + half)
    one = M.mean_ci95([5.0])
    assert one.mean == 5.0 and math.isnan(one.low)


def test_aed_apd_zero_for_identical_tracks_and_grow_with_expression(tmp_path):
    """AED/APD from 3DMM fits: identical landmark tracks give 0; a changed expression gives AED > 0."""
    import torch

    from real3d.eval.metrics import expression_pose_distance
    from real3d.face.bfm import ParametricFace
    from real3d.face.bfm_synthetic import write_synthetic_bfm

    face = ParametricFace.from_dir(write_synthetic_bfm(tmp_path / "bfm", n_vertices=600))
    g = torch.Generator().manual_seed(0)
    n = 4
    ident = torch.randn(1, 80, generator=g) * 0.2
    exp = torch.randn(n, 64, generator=g) * 0.2
    euler = torch.zeros(n, 3)
    euler[:, 1] = torch.linspace(-0.2, 0.2, n)
    trans = torch.zeros(n, 3)

    def track(e):
        uv = face.project_keypoints(ident.expand(n, -1), e, euler, trans, "mp468")  # 224 px, y up
        px = torch.stack([uv[..., 0], 224 - uv[..., 1]], -1) * (512 / 224)
        lm = torch.cat([px, torch.zeros(n, 468, 1)], -1).numpy()
        return [np.concatenate([f, np.zeros((10, 3))]) for f in lm]

    a = track(exp)
    aed0, apd0 = expression_pose_distance(face, a, a, (512, 512))
    assert aed0 == 0.0 and apd0 == 0.0
    aed1, apd1 = expression_pose_distance(face, a, track(exp + 0.6), (512, 512))
    assert aed1 > 0.05
    assert apd1 < 0.05  # the pose is the same: only the expression changed
