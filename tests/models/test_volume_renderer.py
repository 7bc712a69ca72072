"""Tri-plane volume renderer: analytic cases on a few rays, tiny-config behaviour, official parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from real3d.config.volume_renderer import VolumeRendererConfig
from real3d.errors import CheckpointError
from real3d.geometry import camera_from_pose
from real3d.models.volume_renderer import (
    TriplaneDecoder,
    VolumeRenderer,
    composite_unsorted,
    fill_missed_rays,
    importance_depths,
    interval_weights,
    march_rays,
    merge_samples,
    plane_table,
    ray_box_intersection,
    rays_from_camera,
    remap_official_state_dict,
    sample_pdf,
    sample_triplanes,
    sample_triplanes_mean,
    stratified_depths,
)

ZERO_POSE_CAMERA = [1, 0, 0, 0, 0, -1, 0, 0.006, 0, 0, -1, 2.861, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]


def _pinhole(focal: float = 1.0, origin=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Camera with identity rotation (looks along +z, +y down) at `origin`, normalised K."""
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor(origin)
    intr = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1.0]])
    return torch.cat([c2w.flatten(), intr.flatten()])[None]


# ------------------------------------------------------------------------------------------ camera


def test_zero_pose_camera_is_the_documented_vector():
    cam = camera_from_pose(torch.zeros(1, 3), torch.zeros(1, 3))
    assert cam.shape == (1, 25) and cam.dtype == torch.float32
    torch.testing.assert_close(cam, torch.tensor([ZERO_POSE_CAMERA]), atol=1e-6, rtol=0)


def test_camera_matches_official_converter(torso_fixture):
    cam = camera_from_pose(torch.from_numpy(torso_fixture["euler"]), torch.from_numpy(torso_fixture["trans"]))
    torch.testing.assert_close(cam, torch.from_numpy(torso_fixture["camera"]), atol=1e-6, rtol=0)


def test_camera_rotation_is_orthonormal_and_yaw_moves_the_camera_sideways():
    cam = camera_from_pose(torch.tensor([[0.0, 0.3, 0.0]]), torch.zeros(1, 3))
    rot = cam[0, :16].reshape(4, 4)[:3, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3), atol=1e-6, rtol=0)
    centre = cam[0, :16].reshape(4, 4)[:3, 3]
    # yaw rotates the head about y; the camera centre stays at the same radius around (0, .006, .161)
    offset = centre - torch.tensor([0.0, 0.006, 0.161])
    assert abs(offset.norm().item() - 2.7) < 1e-5
    assert abs(centre[0].item() + 2.7 * math.sin(0.3)) < 1e-5


def test_camera_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B,3\]"):
        camera_from_pose(torch.zeros(3), torch.zeros(3))


def test_rays_go_through_pixel_centres_in_opencv_axes():
    res = 4
    origins, dirs = rays_from_camera(_pinhole(focal=2.0, origin=(0.1, 0.2, 0.3)), res)
    assert origins.shape == dirs.shape == (1, res * res, 3)
    torch.testing.assert_close(origins[0], torch.tensor([[0.1, 0.2, 0.3]]).expand(16, 3))
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, 16))
    for row in range(res):
        for col in range(res):
            want = torch.tensor([((col + 0.5) / res - 0.5) / 2.0, ((row + 0.5) / res - 0.5) / 2.0, 1.0])
            torch.testing.assert_close(dirs[0, row * res + col], want / want.norm(), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------ ray / box


def test_ray_box_entry_and_exit_distances():
    s3 = math.sqrt(3.0)
    origins = torch.tensor(
        [
            [0.0, 0.0, -2.0],  # straight through along +z
            [0.2, 0.1, 3.0],  # along -z
            [-1.0, -1.0, -1.0],  # diagonal through the corners
            [0.0, 0.0, 0.0],  # starts inside
            [0.0, 2.0, -2.0],  # passes above the box
            [-2.0, 0.3, 0.1],  # axis-parallel inside the y and z slabs
            [-2.0, 0.7, 0.0],  # axis-parallel outside the y slab
            [0.0, 0.0, -3.0],  # box_warp 2 test ray (handled below)
        ]
    )
    dirs = torch.tensor(
        [[0, 0, 1.0], [0, 0, -1.0], [1 / s3, 1 / s3, 1 / s3], [1.0, 0, 0]]
        + [[0, 0, 1.0], [1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]]
    )
    near, far, valid = ray_box_intersection(origins, dirs, box_warp=1.0)
    want_near = [1.5, 2.5, 0.5 * s3, -0.5, -1.0, 1.5, -1.0, 2.5]
    want_far = [2.5, 3.5, 1.5 * s3, 0.5, -2.0, 2.5, -2.0, 3.5]
    assert valid.tolist() == [True, True, True, True, False, True, False, True]
    torch.testing.assert_close(near, torch.tensor(want_near), atol=1e-6, rtol=0)
    torch.testing.assert_close(far, torch.tensor(want_far), atol=1e-6, rtol=0)
    near2, far2, _ = ray_box_intersection(origins[-1:], dirs[-1:], box_warp=2.0)
    assert near2.item() == pytest.approx(2.0) and far2.item() == pytest.approx(4.0)


def test_missed_rays_get_the_official_placeholder_interval():
    near = torch.tensor([[1.0, -1.0, 2.0, 1.5]])
    far = torch.tensor([[2.0, -2.0, 3.0, 2.5]])
    near_f, far_f, hit = fill_missed_rays(near, far)
    assert hit.tolist() == [[True, False, True, True]]
    assert near_f[0, 1].item() == 1.0 and far_f[0, 1].item() == 2.0  # min and max of the valid *near*
    torch.testing.assert_close(near_f[:, [0, 2, 3]], near[:, [0, 2, 3]])


# ------------------------------------------------------------------------------------ sampling


def test_deterministic_stratified_depths_are_strata_midpoints():
    near, far = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 3.0]])
    depths = stratified_depths(near, far, 4, "deterministic")
    want = torch.tensor([[[1 + 1 / 6, 1.5, 1 + 5 / 6, 2 + 1 / 6], [0.5, 1.5, 2.5, 3.5]]])
    torch.testing.assert_close(depths, want)


def test_stochastic_stratified_depths_stay_in_their_strata_and_follow_the_seed():
    near, far = torch.full((2, 8), 1.0), torch.full((2, 8), 2.5)
    grid = 1.0 + torch.arange(4) * 0.5
    draws = [stratified_depths(near, far, 4, "stochastic", torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    offset = draws[0] - grid
    assert offset.min() >= 0 and offset.max() < 0.5


def test_sample_pdf_deterministic_is_the_piecewise_linear_inverse_cdf():
    g = torch.Generator().manual_seed(0)
    bins = torch.cumsum(torch.rand(8, 7, generator=g) + 0.1, -1)  # edges; the last one is never used
    weights = torch.rand(8, 5, generator=g)
    samples = sample_pdf(bins, weights, 9, "deterministic")
    for i in range(8):
        pdf = (weights[i] + 1e-5) / (weights[i] + 1e-5).sum()
        cdf = np.concatenate([[0.0], np.cumsum(pdf.double().numpy())])
        want = np.interp(np.linspace(0, 1, 9), cdf, bins[i, :6].double().numpy())
        np.testing.assert_allclose(samples[i].numpy(), want, atol=1e-5)


def test_sample_pdf_stochastic_draws_inside_the_bins_and_follows_the_seed():
    bins = torch.linspace(0, 1, 6).expand(4, 6)
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]).expand(4, 5)
    a = sample_pdf(bins, weights, 16, "stochastic", torch.Generator().manual_seed(0))
    b = sample_pdf(bins, weights, 16, "stochastic", torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    # nearly all probability mass is in bin [0.4, 0.6]
    assert ((a >= 0.4 - 1e-3) & (a <= 0.6 + 1e-3)).float().mean() > 0.95


def test_importance_depths_smooth_the_weights_as_documented():
    # one interval with weight: max/avg pooling spreads it to 3 bins, the two end bins are dropped
    depths = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    weights = torch.tensor([[[0.0, 1.0, 0.0]]])
    fine = importance_depths(depths, weights, 4, "deterministic")
    # smoothed weights [.51, 1.01, .51] -> kept [1.01]: one bin between midpoints 0.5 and 1.5
    torch.testing.assert_close(fine, torch.tensor([[[0.5, 0.5 + 1 / 3, 0.5 + 2 / 3, 1.5]]]))


def test_merge_samples_sorts_depths_and_carries_values():
    za, zb = torch.tensor([[[0.0, 2.0]]]), torch.tensor([[[1.0, 3.0]]])
    colors_a, colors_b = torch.stack([za, -za], -1), torch.stack([zb, -zb], -1)  # 1x1x2x2
    z, (colors, sigma) = merge_samples(za, zb, (colors_a, za * 10), (colors_b, zb * 10))
    assert z.tolist() == [[[0.0, 1.0, 2.0, 3.0]]]
    assert sigma.tolist() == [[[0.0, 10.0, 20.0, 30.0]]]
    assert colors[0, 0].tolist() == [[0.0, -0.0], [1.0, -1.0], [2.0, -2.0], [3.0, -3.0]]


def test_unsorted_compositing_equals_march_over_merged_samples():
    """composite_unsorted (the renderer's path) equals march_rays on merge_samples' sorted colours."""
    g = torch.Generator().manual_seed(11)
    za = torch.sort(torch.rand(2, 5, 6, generator=g) * 3, -1).values
    zb = torch.rand(2, 5, 4, generator=g) * 3
    ca, cb = torch.rand(2, 5, 6, 3, generator=g), torch.rand(2, 5, 4, 3, generator=g)
    sa, sb = torch.randn(2, 5, 6, generator=g) * 3, torch.randn(2, 5, 4, generator=g) * 3
    z, (colors, sigma) = merge_samples(za, zb, (ca, sa), (cb, sb))
    ref = march_rays(colors, sigma, z, clamp_depth=False)
    z2, order = torch.sort(torch.cat([za, zb], -1), -1)
    w = interval_weights(torch.cat([sa, sb], -1).gather(-1, order), z2)
    torch.testing.assert_close(w, ref.weights, rtol=0, atol=0)
    torch.testing.assert_close(composite_unsorted(w, order, (ca, cb)) * 2 - 1, ref.rgb, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ tri-planes


def test_gathered_plane_mean_equals_grid_sample_mean():
    """The renderer's embedding-bag lookup equals grid_sample's bilinear zeros-padded mean over the planes,
    including points outside the box (partly or fully outside a plane)."""
    g = torch.Generator().manual_seed(12)
    planes = torch.randn(2, 3, 4, 5, 7, generator=g)
    points = torch.rand(2, 50, 3, generator=g) * 1.6 - 0.8  # box_warp 1: planes span [-0.5, 0.5]
    ref = sample_triplanes(planes, points, box_warp=1.0).mean(1)
    got = sample_triplanes_mean(plane_table(planes), planes.shape, points, box_warp=1.0)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_gathered_plane_mean_far_outside_and_nan_points_read_zeros():
    """Points far outside every plane (clamped onto the zero border) and NaN points give zero features, as
    grid_sample's zeros padding does for the former."""
    planes = torch.randn(1, 3, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    points = torch.tensor([[[5.0, -7.0, 9.0], [-1e6, 1e6, 0.0], [float("nan"), 0.1, 0.2]]])
    got = sample_triplanes_mean(plane_table(planes), planes.shape, points, box_warp=1.0)
    assert torch.equal(got, torch.zeros(1, 3, 4))
    torch.testing.assert_close(got[:, :2], sample_triplanes(planes, points[:, :2], box_warp=1.0).mean(1))


def test_decoder_chunked_inference_equals_the_mlp_and_training_keeps_gradients():
    torch.manual_seed(4)
    decoder = TriplaneDecoder(feature_dim=8, hidden_dim=16, lr_multiplier=0.5)
    with torch.no_grad():
        decoder.net[0].bias.normal_(), decoder.net[2].bias.normal_()
    feats = torch.randn(2, 37, 8)
    with torch.no_grad():
        logits = decoder.net(feats)
        probs, sigma = decoder.decode_mean(feats, chunk=5)  # chunks that do not divide the 74 samples
    torch.testing.assert_close(probs, torch.sigmoid(logits[..., 1:]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sigma, logits[..., 0], rtol=1e-6, atol=1e-6)
    feats.requires_grad_(True)
    probs_g, sigma_g = decoder.decode_mean(feats)
    (probs_g.sum() + sigma_g.sum()).backward()
    assert feats.grad is not None and decoder.net[0].weight.grad is not None
    assert feats.grad.abs().sum() > 0 and decoder.net[0].weight.grad.abs().sum() > 0
    torch.testing.assert_close(probs_g.detach(), probs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("plane", [0, 1, 2])
def test_feature_in_one_plane_is_seen_at_the_documented_point(plane):
    size, row, col = 8, 2, 5
    planes = torch.zeros(1, 3, 1, size, size)
    planes[0, plane, 0, row, col] = 1.0
    gu, gv = (2 * col + 1) / size - 1, (2 * row + 1) / size - 1  # grid_sample coords of that texel centre
    u, v = gu / 2, gv / 2  # world units for box_warp 1 (coords are scaled by 2 / box_warp)
    other = 0.37  # the free coordinate
    # plane 0 is (x, y), plane 1 is (x, z), plane 2 is (z, x): (u indexes width, v indexes height)
    point = {0: (u, v, other), 1: (u, other, v), 2: (v, other, u)}[plane]
    swapped = {0: (v, u, other), 1: (v, other, u), 2: (u, other, v)}[plane]
    feats = sample_triplanes(planes, torch.tensor([[point, swapped]]), box_warp=1.0)  # 1x3x2x1
    assert feats.shape == (1, 3, 2, 1)
    assert feats[0, plane, 0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert feats[0, plane, 1, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert feats[0, [k for k in range(3) if k != plane], :, 0].abs().max().item() == 0.0
    # box_warp 2 doubles the world extent of the planes
    feats2 = sample_triplanes(planes, 2 * torch.tensor([[point]]), box_warp=2.0)
    assert feats2[0, plane, 0, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_decoder_averages_planes_and_applies_equalized_lr_gains():
    dec = TriplaneDecoder(feature_dim=4, hidden_dim=6)
    assert sorted(dec.state_dict()) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    feats = torch.randn(2, 3, 5, 4, generator=g)
    out = dec(feats)
    assert out.rgb.shape == (2, 5, 4) and out.sigma.shape == (2, 5)
    sd = dec.state_dict()
    x = feats.mean(1)
    h = torch.nn.functional.softplus(x @ (sd["net.0.weight"] / 2.0).T + sd["net.0.bias"])  # 1/sqrt(4)
    y = h @ (sd["net.2.weight"] / math.sqrt(6)).T + sd["net.2.bias"]
    torch.testing.assert_close(out.sigma, y[..., 0])
    torch.testing.assert_close(out.rgb, torch.sigmoid(y[..., 1:]) * 1.002 - 0.001)
    # a feature redistributed between planes with the same mean decodes identically
    shifted = feats + torch.tensor([1.0, -2.0, 1.0])[None, :, None, None]
    torch.testing.assert_close(dec(shifted).rgb, out.rgb)


# ------------------------------------------------------------------------------------ ray marching


def test_constant_density_slab_gives_the_analytic_transmittance():
    rays, samples = 8, 4
    raw_sigma = torch.linspace(-3.0, 4.0, rays)  # one constant density per ray
    density = torch.nn.functional.softplus(raw_sigma - 1)  # what the marcher applies
    depths = (1.0 + 0.25 * torch.arange(samples)).expand(1, rays, samples)  # delta = 0.25
    colors = torch.full((1, rays, samples, 2), 0.8)
    res = march_rays(colors, raw_sigma[None, :, None].expand(1, rays, samples), depths)
    decay = torch.exp(-density * 0.25)[:, None]  # per-interval transmittance
    i = torch.arange(samples - 1)
    want_w = decay**i * (1 - decay)  # w_i = T_i * alpha_i
    torch.testing.assert_close(res.weights[0], want_w, atol=1e-6, rtol=1e-5)
    opacity = 1 - torch.exp(-density * 0.75)
    torch.testing.assert_close(res.weights.sum(-1)[0], opacity, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.rgb[0], (2 * 0.8 * opacity - 1)[:, None].expand(rays, 2), atol=1e-6, rtol=1e-5)
    mids = 1.125 + 0.25 * i
    torch.testing.assert_close(res.depth[0], (want_w * mids).sum(-1) / want_w.sum(-1), atol=1e-6, rtol=1e-5)


def test_slab_between_empty_space_and_depth_clamp():
    # density only between the 2nd and 3rd sample: opacity = 1 - exp(-s * delta) and depth = slab middle
    depths = torch.tensor([[[0.0, 1.0, 1.5, 3.0]]])
    sigma = torch.tensor([[[-300.0, 3.0, 3.0, -300.0]]])
    res = march_rays(torch.ones(1, 1, 4, 1), sigma, depths)
    s = torch.nn.functional.softplus(torch.tensor(2.0))
    assert res.weights.sum().item() == pytest.approx(1 - math.exp(-s.item() * 0.5), abs=1e-6)
    assert res.depth.item() == pytest.approx(1.25, abs=1e-5)
    # no density at all: depth is NaN -> +inf -> clamped to the largest sample depth
    empty = march_rays(torch.ones(1, 1, 4, 1), torch.full((1, 1, 4), -300.0), depths)
    assert empty.depth.item() == 3.0 and empty.rgb.item() == -1.0


# ------------------------------------------------------------------------------------ renderer


@pytest.fixture(scope="module")
def tiny_setup():
    cfg = VolumeRendererConfig.tiny()
    g = torch.Generator().manual_seed(0)
    renderer = VolumeRenderer(cfg, chunk_rays=64)  # 4 chunks of the 256 rays
    with torch.no_grad():
        for p in renderer.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    planes = torch.randn(1, 3, cfg.feature_dim, 16, 16, generator=g)
    camera = camera_from_pose(torch.zeros(1, 3), torch.zeros(1, 3))
    return renderer, planes, camera


def test_tiny_render_shapes_and_ranges(tiny_setup):
    renderer, planes, camera = tiny_setup
    with torch.no_grad():
        out = renderer(planes, camera)
    assert out.feature_image.shape == (1, 8, 16, 16)
    assert out.depth.shape == out.opacity.shape == (1, 1, 16, 16)
    assert out.depths_coarse.shape == out.depths_fine.shape == (1, 256, 4)
    assert out.ray_hit.all()  # the zero-pose field of view lies inside the box
    assert (out.opacity > 0).all() and (out.opacity < 1).all()
    assert out.image_raw.shape == (1, 3, 16, 16) and out.image_raw.abs().max() <= 1
    lo, hi = out.depths_coarse.min(), out.depths_coarse.max()
    assert (out.depth >= lo).all() and (out.depth <= hi).all()


def test_deterministic_mode_is_repeatable_and_chunk_independent(tiny_setup):
    renderer, planes, camera = tiny_setup
    with torch.no_grad():
        a, b = renderer(planes, camera), renderer(planes, camera)
        whole = VolumeRenderer(renderer.config, chunk_rays=256)
        whole.load_state_dict(renderer.state_dict())
        c = whole(planes, camera)
    assert torch.equal(a.feature_image, b.feature_image) and torch.equal(a.depth, b.depth)
    torch.testing.assert_close(a.feature_image, c.feature_image, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.depth, c.depth, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.opacity, c.opacity, atol=1e-6, rtol=0)


def test_stochastic_mode_follows_the_generator(tiny_setup):
    renderer, planes, camera = tiny_setup
    stoch = VolumeRenderer(VolumeRendererConfig.tiny(), mode="stochastic")
    stoch.load_state_dict(renderer.state_dict())
    with torch.no_grad():
        runs = [stoch(planes, camera, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
        det = renderer(planes, camera)
    assert torch.equal(runs[0].feature_image, runs[1].feature_image)
    assert not torch.equal(runs[0].depths_coarse, runs[2].depths_coarse)
    assert (runs[0].feature_image - runs[2].feature_image).abs().max() > 1e-4
    assert not torch.equal(runs[0].depths_coarse, det.depths_coarse)
    # the jitter stays within the strata of the deterministic layout (midpoint +- half a step)
    step = det.depths_coarse[..., 1] - det.depths_coarse[..., 0]
    assert ((runs[0].depths_coarse - det.depths_coarse).abs() <= 0.5 * step[..., None] + 1e-5).all()


def test_rays_that_miss_the_box_render_finite_values(tiny_setup):
    renderer, planes, _ = tiny_setup
    camera = _pinhole(focal=0.3, origin=(0.0, 0.0, -3.0))  # wide view: the corners miss the box
    with torch.no_grad():
        out = renderer(planes, camera)
    assert not out.ray_hit.all() and out.ray_hit.any()
    assert not out.ray_hit[0, 0] and out.ray_hit[0, 8 * 16 + 8]
    assert torch.isfinite(out.feature_image).all() and torch.isfinite(out.depth).all()


def test_renderer_rejects_wrong_plane_shapes(tiny_setup):
    renderer, planes, camera = tiny_setup
    with pytest.raises(ValueError, match="planes must be"):
        renderer(planes[:, :2], camera)


def test_config_rejects_invalid_sizes():
    with pytest.raises(ValueError, match="coarse"):
        VolumeRendererConfig(num_samples_coarse=1)
    with pytest.raises(ValueError, match="mode must be"):
        VolumeRenderer(VolumeRendererConfig.tiny(), mode="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_rays must be positive"):
        VolumeRenderer(VolumeRendererConfig.tiny(), chunk_rays=0)


# ------------------------------------------------------------------------------------ official parity


def test_remap_selects_the_decoder_and_loads_strictly(torso_state_dict):
    sd = remap_official_state_dict(torso_state_dict)
    assert sorted(sd) == ["decoder.net.0.bias", "decoder.net.0.weight", "decoder.net.2.bias", "decoder.net.2.weight"]
    VolumeRenderer(VolumeRendererConfig.official()).load_state_dict(sd, strict=True)
    with pytest.raises(CheckpointError, match="decoder"):
        remap_official_state_dict({"superresolution.block0.conv0.weight": torch.zeros(1)})


@pytest.fixture(scope="module")
def official_render(torso_state_dict, torso_fixture):
    renderer = VolumeRenderer(VolumeRendererConfig.official())
    renderer.load_state_dict(remap_official_state_dict(torso_state_dict), strict=True)
    cano, secc = torso_fixture["cano_planes"], torso_fixture["secc_planes"]  # float16 storage
    planes = torch.from_numpy(cano).float() + torch.from_numpy(secc).float()
    with torch.no_grad():
        return renderer(planes, torch.from_numpy(torso_fixture["camera"]))


def _err(a: torch.Tensor, ref: np.ndarray) -> torch.Tensor:
    return (a - torch.from_numpy(ref)).abs()


def test_official_sample_depths(official_render, torso_fixture):
    idx = torch.from_numpy(torso_fixture["debug_ray_index"])
    # the stratified depths depend only on the camera and the box: exact up to float32 rounding
    assert _err(official_render.depths_coarse[0, idx], torso_fixture["debug_depths_coarse"]).max() <= 1e-5
    # the importance depths also depend on the float16-stored planes (the fixture used float32 planes)
    fine = _err(official_render.depths_fine[0, idx], torso_fixture["debug_depths_fine"])
    assert fine.max() <= 5e-4 and fine.mean() <= 5e-5


def test_official_images_within_float16_plane_rounding(official_render, torso_fixture):
    """Tolerances are ~2x the official ones because the stored planes are float16 (see the report:
    perturbing the planes by their float16 rounding moves our output as much as the residual here).
    The strict 3e-3 / 1e-3 tolerances are checked end to end with float32 planes."""
    out = official_render
    checks = {
        "feature_image": (out.feature_image, 1e-2, 5e-4),
        "image_depth": (out.depth, 3e-3, 3e-4),
        "weights_img": (out.opacity, 4e-3, 3e-4),
        "image_raw": (out.image_raw, 8e-3, 5e-4),
    }
    for key, (value, max_tol, mean_tol) in checks.items():
        err = _err(value, torso_fixture[key])
        assert value.shape == torso_fixture[key].shape, key
        assert err.max() <= max_tol and err.mean() <= mean_tol, f"{key}: max {err.max():.3g} mean {err.mean():.3g}"


@pytest.mark.slow
def test_official_residual_is_explained_by_float16_plane_rounding(torso_state_dict, torso_fixture, official_render):
    """Re-render with planes moved by a random half-ulp of float16: the change matches our residual."""
    cano, secc = torch.from_numpy(torso_fixture["cano_planes"]), torch.from_numpy(torso_fixture["secc_planes"])

    def half_ulp_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        spacing = 2.0 ** (torch.floor(torch.log2(x.float().abs().clamp_min(2**-14))) - 10)
        return (torch.rand(x.shape, generator=g) - 0.5) * spacing

    g = torch.Generator().manual_seed(1)
    planes = cano.float() + secc.float() + half_ulp_noise(cano, g) + half_ulp_noise(secc, g)
    renderer = VolumeRenderer(VolumeRendererConfig.official())
    renderer.load_state_dict(remap_official_state_dict(torso_state_dict), strict=True)
    with torch.no_grad():
        moved = renderer(planes, torch.from_numpy(torso_fixture["camera"]))
    pairs = {
        "feature_image": (official_render.feature_image, moved.feature_image),
        "weights_img": (official_render.opacity, moved.opacity),
        "image_depth": (official_render.depth, moved.depth),
    }
    for ref_key, (ours, perturbed) in pairs.items():
        residual = _err(ours, torso_fixture[ref_key]).mean()
        change = (perturbed - ours).abs().mean()
        assert 0.5 < (residual / change).item() < 2.0, f"{ref_key}: residual {residual:.3g} vs change {change:.3g}"
