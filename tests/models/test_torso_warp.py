"""Warping torso branch of HTB-SR: spectral norm, motion field, official-weight parity, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from real3d.config.htbsr import TorsoWarpConfig
from real3d.models.torso_warp import SNConv2d, TorsoWarp, coordinate_grid_3d, fuse_depth_constant

PREFIX = "superresolution.torso_model."


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_inputs(cfg: TorsoWarpConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = cfg.resolution
    seg = torch.zeros(batch, 6, 2 * r, 2 * r)
    seg[:, 4, r:, :] = 1.0  # clothes in the lower half
    seg[:, 2, r // 2 : r, r // 2 : r + r // 2] = 1.0  # neck
    seg[:, 0] = 1.0 - seg[:, 2] - seg[:, 4]
    kp_s = torch.rand(batch, 68, 3, generator=g) * 1.6 - 0.8
    kp_s[..., 2] = 0
    kp_d = kp_s + 0.05 * torch.randn(batch, 68, 3, generator=g)
    kp_d[..., 2] = 0
    return {
        "torso": torch.rand(batch, 3, r, r, generator=g) * 2 - 1,
        "segmap": seg,
        "kp_s": kp_s,
        "kp_d": kp_d,
        "head_rgb": torch.rand(batch, 3, r, r, generator=g) * 2 - 1,
        "head_w": torch.rand(batch, 1, r, r, generator=g),
    }


def _run(model: TorsoWarp, inp: dict[str, torch.Tensor], kp_d: torch.Tensor | None = None):
    src = model.encode_source(inp["torso"], inp["segmap"])
    return model(src, inp["kp_s"], inp["kp_d"] if kp_d is None else kp_d, inp["head_rgb"], inp["head_w"])


def test_spectral_norm_divides_by_top_singular_value_and_matches_legacy() -> None:
    torch.manual_seed(0)
    conv = SNConv2d(4, 6, 3, 1).eval()
    mat = conv.weight_orig.detach().reshape(6, -1).double()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    conv.weight_u.copy_(u[:, 0].float())
    conv.weight_v.copy_(vh[0].float())
    torch.testing.assert_close(conv.sigma().double(), s[0], rtol=1e-5, atol=0)
    eff = conv.normalized_weight().detach().reshape(6, -1).double()
    one = torch.tensor(1.0, dtype=torch.float64)
    torch.testing.assert_close(torch.linalg.matrix_norm(eff, ord=2), one, rtol=1e-5, atol=0)

    # same keys and eval output as torch's legacy spectral_norm
    legacy = torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 6, 3, 1, 1)).eval()
    assert set(legacy.state_dict()) == set(conv.state_dict())
    legacy.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(x), legacy(x), rtol=1e-5, atol=1e-6)


def test_spectral_norm_power_iteration_converges_in_training() -> None:
    torch.manual_seed(1)
    conv = SNConv2d(3, 5, 3, 1).train()
    for _ in range(200):
        conv.sigma()
    top = torch.linalg.matrix_norm(conv.weight_orig.detach().reshape(5, -1), ord=2)
    torch.testing.assert_close(conv.sigma().detach(), top, rtol=1e-4, atol=0)


def test_coordinate_grid_is_xyz_in_align_corners_convention() -> None:
    g = coordinate_grid_3d(3, 4, 5, torch.zeros(1))
    assert g.shape == (3, 4, 5, 3)
    torch.testing.assert_close(g[0, 0, :, 0], torch.linspace(-1, 1, 5))  # x along W
    torch.testing.assert_close(g[0, :, 0, 1], torch.linspace(-1, 1, 4))  # y along H
    torch.testing.assert_close(g[:, 0, 0, 2], torch.linspace(-1, 1, 3))  # z along D
    torch.testing.assert_close(g[1, 2, 3], torch.tensor([0.5, 1.0 / 3.0, 0.0]))  # (x, y, z) of voxel d=1,h=2,w=3


def test_tiny_shapes_and_identity_motion_when_keypoints_do_not_move() -> None:
    torch.manual_seed(2)
    cfg = TorsoWarpConfig.tiny()
    model = TorsoWarp(cfg).eval()
    inp = _tiny_inputs(cfg)
    with torch.no_grad():
        out = _run(model, inp)
        still = _run(model, inp, kp_d=inp["kp_s"])
    r, fr, d = cfg.resolution, cfg.feature_resolution, cfg.feature_depth
    assert out.rgb.shape == (2, 3, r, r) and out.hidden.shape == (2, cfg.generator_channels[-1], r, r)
    assert out.deformation.shape == (2, d, fr, fr, 3)
    assert out.occlusion.shape == out.occlusion_2_pre.shape == (2, 1, fr, fr)
    assert out.occlusion_2.shape == (2, 1, r, r)
    assert 0 < out.occlusion_2.min() and out.occlusion_2.max() < 1
    # every sparse motion is the identity grid, so the softmax-weighted sum is too
    grid = coordinate_grid_3d(d, fr, fr, out.deformation).expand_as(still.deformation)
    torch.testing.assert_close(still.deformation, grid, rtol=0, atol=1e-6)
    assert not torch.allclose(out.deformation, grid, atol=1e-3)


def test_tiny_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(3)
    cfg = TorsoWarpConfig.tiny()
    model = TorsoWarp(cfg).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    save_file(model.state_dict(), tmp_path / "torso.safetensors")
    clone = TorsoWarp(cfg).eval()
    clone.load_state_dict(load_file(tmp_path / "torso.safetensors"), strict=True)
    inp = _tiny_inputs(cfg, seed=4)
    with torch.no_grad():
        a, b = _run(model, inp), _run(clone, inp)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.occlusion_2, b.occlusion_2)


@pytest.mark.slow
def test_official_torso_branch_parity(torso_state_dict, torso_fixture) -> None:
    """Seed-0 official weights: torso branch alone against the golden intermediates (~10-25 s on 2 cores)."""
    sd = {k[len(PREFIX) :]: v for k, v in torso_state_dict.items() if k.startswith(PREFIX)}
    model = TorsoWarp(TorsoWarpConfig.official()).eval()
    model.load_state_dict(sd, strict=True)
    t = {k: torch.from_numpy(v) for k, v in torso_fixture.items()}

    def r256(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)

    with torch.no_grad():
        src = model.encode_source(r256(t["ref_torso_img"]), t["segmap"].float())
        out = model(src, t["kp_s"], t["kp_d"], r256(t["feature_image"][:, :3]), r256(t["weights_img"]))

    def f16_close(a: torch.Tensor, ref: np.ndarray) -> None:
        r = torch.from_numpy(ref).float()
        assert ((a - r).abs() <= 2e-3 + 1e-3 * r.abs()).all()

    f16_close(src.appearance_raw, torso_fixture["torso_appearance_feats"])
    f16_close(out.hidden, torso_fixture["deformed_torso_hid"])
    for name, got, tol in (
        ("torso_deformation", out.deformation, 5e-4),
        ("torso_rgb", out.rgb, 5e-4),
        ("occlusion", out.occlusion, 1e-4),
        ("torso_occlusion_2_pre", out.occlusion_2_pre, 1e-4),
        ("occlusion_2", out.occlusion_2, 1e-4),
    ):
        err = (got - t[name]).abs().max().item()
        assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


@pytest.mark.parametrize(("depth", "k"), [(16, 7), (3, 7), (5, 3)])
def test_depth_constant_fusion_equals_the_repeated_input(depth: int, k: int) -> None:
    """The head channels repeated over D cost one 2-D conv; the result equals the 3-D conv of the repeat."""
    torch.manual_seed(depth)
    conv = torch.nn.Conv3d(9, 4, k, 1, k // 2).double()
    x, head = torch.randn(2, 5, depth, 6, 7).double(), torch.randn(2, 4, 6, 7).double()
    ref = conv(torch.cat([x, head.unsqueeze(2).expand(-1, -1, depth, -1, -1)], dim=1))
    torch.testing.assert_close(fuse_depth_constant(conv, x, head), ref, rtol=0, atol=1e-12)
