"""HTB-SR: official key layout and golden-tensor parity, Eq. 5 fusion, per-source caching, save/load."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from real3d.config.htbsr import HTBSRConfig, TorsoWarpConfig
from real3d.errors import CheckpointError, InputError
from real3d.models.htbsr import HTBSR, person_alpha, remap_official_state_dict
from real3d.state_dict import instantiate_with_weights


def _tiny_inputs(cfg: HTBSRConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r, out = cfg.input_resolution, cfg.output_resolution
    seg = torch.zeros(batch, 6, out, out)
    seg[:, 4, out // 2 :, :] = 1.0
    seg[:, 2, out // 4 : out // 2, out // 4 : 3 * out // 4] = 1.0
    seg[:, 0] = 1.0 - seg[:, 2] - seg[:, 4]
    feat = torch.rand(batch, cfg.feature_channels, r, r, generator=g) * 2 - 1
    kp_s = torch.rand(batch, 68, 3, generator=g) * 1.6 - 0.8
    kp_s[..., 2] = 0
    kp_d = kp_s + 0.05 * torch.randn(batch, 68, 3, generator=g)
    kp_d[..., 2] = 0
    return {
        "rgb128": feat[:, :3],
        "feature128": feat,
        "opacity128": torch.rand(batch, 1, r, r, generator=g),
        "kp_s": kp_s,
        "kp_d": kp_d,
        "ref_torso_img": torch.rand(batch, 3, out, out, generator=g) * 2 - 1,
        "bg_img": torch.rand(batch, 3, out, out, generator=g) * 2 - 1,
        "segmap": seg,
    }


FRAME_KEYS = ("rgb128", "feature128", "opacity128", "kp_s", "kp_d")
SOURCE_KEYS = ("ref_torso_img", "bg_img", "segmap")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model() -> HTBSR:
    torch.manual_seed(0)
    return HTBSR(HTBSRConfig.tiny()).eval()


def test_state_dict_keys_match_official(torso_state_dict) -> None:
    official = remap_official_state_dict(torso_state_dict)
    model = HTBSR(HTBSRConfig.official())
    ours = model.state_dict()
    assert list(ours) == list(official)  # same keys, same order
    assert all(ours[k].shape == official[k].shape for k in ours)
    assert sum(p.numel() for p in model.parameters()) == 54_976_359
    loaded = instantiate_with_weights(HTBSR, HTBSRConfig.official(), official, "official HTB-SR")
    key = "torso_model.deform_based_generator.in_conv.layers.0.weight_orig"
    assert torch.equal(loaded.state_dict()[key], official[key])


def test_remap_rejects_a_foreign_state_dict() -> None:
    with pytest.raises(CheckpointError, match="superresolution"):
        remap_official_state_dict({"decoder.net.0.weight": torch.zeros(1)})
    sd = {"superresolution." + k: v for k, v in HTBSR(HTBSRConfig.tiny()).state_dict().items()}
    with pytest.raises(CheckpointError, match="shape mismatches"):  # tiny weights into the official-size model
        instantiate_with_weights(HTBSR, HTBSRConfig.official(), remap_official_state_dict(sd), "official HTB-SR")
    del sd["superresolution.block0.conv0.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): block0.conv0.weight"):
        instantiate_with_weights(HTBSR, HTBSRConfig.tiny(), remap_official_state_dict(sd), "official HTB-SR")


@pytest.fixture(scope="module")
def official_model(torso_state_dict) -> HTBSR:
    sd = remap_official_state_dict(torso_state_dict)
    return instantiate_with_weights(HTBSR, HTBSRConfig.official(), sd, "official HTB-SR")


def _resize256(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)


def test_official_parity_by_stage(official_model: HTBSR, torso_fixture) -> None:
    """The cheap stages against the golden tensors: block0 (on a crop: it is local, its styles are
    constant), the torso appearance volume, the background blend."""
    t = {k: torch.from_numpy(v) for k, v in torso_fixture.items()}
    feat = t["feature_image"][:, :, 40:80, 40:80]  # [1,32,40,40] -> block0 output rows/cols 80:160
    with torch.no_grad():
        _, rgb = official_model.block0(feat, feat[:, :3], torch.ones(1, 3, 512))
        torso = official_model.torso_model.encode_source(_resize256(t["ref_torso_img"]), t["segmap"].float())
    err = (rgb[:, :, 4:-4, 4:-4] - t["sr_block0_rgb"][:, :, 84:156, 84:156]).abs().max().item()
    assert err <= 2e-3, f"sr_block0_rgb: {err:.3g}"
    ref = t["torso_appearance_feats"].float()
    assert ((torso.appearance_raw - ref).abs() <= 2e-3 + 1e-3 * ref.abs()).all()
    # Eq. 5 background blend from the golden head/torso RGB and torso alpha
    person = person_alpha(_resize256(t["weights_img"]), t["occlusion_2"], official_model.config.head_threshold)
    blended = t["sr_head_torso_block_rgb"] * person + _resize256(t["bg_img"]) * (1 - person)
    assert (blended - t["sr_block1_in_rgb"]).abs().max().item() <= 2e-3
    assert ((person > 0) & (person < 1)).any() and (person == 1).any()


@pytest.mark.slow
def test_official_parity(official_model: HTBSR, torso_fixture) -> None:
    """Seed-0 official weights and inputs against every golden tensor (README §6 tolerances); ~30-60 s."""
    model = official_model
    t = {k: torch.from_numpy(v) for k, v in torso_fixture.items()}
    feat = t["feature_image"]
    with torch.no_grad():
        cache = model.encode_source(t["ref_torso_img"], t["bg_img"], t["segmap"].float())
        out = model(feat[:, :3], feat, t["weights_img"], t["kp_s"], t["kp_d"], cache=cache)
    errors = {}
    for name, tol in (
        ("sr_block0_rgb", 2e-3),
        ("torso_deformation", 5e-4),
        ("torso_occlusion_2_pre", 1e-4),
        ("occlusion", 1e-4),
        ("torso_rgb", 5e-4),
        ("occlusion_2", 1e-4),
        ("sr_head_torso_block_rgb", 2e-3),
        ("sr_block1_in_rgb", 2e-3),
        ("image", 2e-3),
    ):
        errors[name] = (getattr(out, name) - t[name]).abs().max().item()
        assert errors[name] <= tol, f"{name}: max abs error {errors[name]:.3g} > {tol} ({errors})"
    assert (out.image - t["image"]).abs().mean().item() <= 1e-4
    for name in ("torso_appearance_feats", "deformed_torso_hid"):  # stored as float16
        ref = torch.from_numpy(torso_fixture[name]).float()
        assert ((getattr(out, name) - ref).abs() <= 2e-3 + 1e-3 * ref.abs()).all(), name
    assert out.image.shape == (1, 3, 512, 512) and out.image.abs().max() <= 1


def test_person_alpha_thresholds_the_head_and_clamps() -> None:
    head = torch.tensor([0.95, 0.5, 0.0, 0.9, 0.95]).reshape(1, 1, 1, 5)
    torso = torch.tensor([0.0, 0.3, 0.9, 0.0, 0.5]).reshape(1, 1, 1, 5)
    expected = torch.tensor([1.0, 0.8, 0.9, 0.9, 1.0]).reshape(1, 1, 1, 5)
    torch.testing.assert_close(person_alpha(head, torso, 0.9), expected)


@pytest.mark.parametrize("grad", [False, True])
def test_folded_fusions_equal_the_released_concatenations(tiny_model: HTBSR, grad: bool) -> None:
    """The torso encoder folded into the head/torso fusion conv, and the per-source background half of the
    1x1 fg/bg fusion conv, compute the released cat-then-conv formulas (with and without autograd)."""
    cfg, g = tiny_model.config, torch.Generator().manual_seed(7)
    mid, c0 = cfg.mid_resolution, cfg.block0_channels
    hid = cfg.torso.generator_channels[-1]
    x = torch.randn(2, c0, mid, mid, generator=g).contiguous(memory_format=torch.channels_last)
    hidden = torch.randn(2, hid, mid, mid, generator=g)
    alpha = torch.rand(2, 1, mid, mid, generator=g)
    alpha[:, :, :2] = 0.0  # pure torso / background rows
    alpha[:, :, -2:] = 1.0  # pure head rows
    bg = torch.rand(2, 3, mid, mid, generator=g) * 2 - 1
    with torch.set_grad_enabled(grad):
        x.requires_grad_(grad)
        torso = tiny_model.torso_encoder(hidden)
        ref_ht = tiny_model.fuse_head_torso_convs(torch.cat([x * alpha, torso * (1 - alpha)], 1))
        got_ht = tiny_model._fuse_head_torso(x, hidden, alpha)
        bg_features = tiny_model.bg_encoder(bg)
        ref_fb = tiny_model.fuse_fg_bg_convs(torch.cat([x * alpha, bg_features * (1 - alpha)], 1))
        first = tiny_model.fuse_fg_bg_convs[0]
        bg_fused = torch.nn.functional.conv2d(bg_features, first.weight[:, c0:], first.bias)
        got_fb = tiny_model._fuse_fg_bg(x, bg_fused, alpha)
    torch.testing.assert_close(got_ht, ref_ht, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_fb, ref_fb, rtol=1e-5, atol=1e-5)
    assert got_ht.requires_grad == got_fb.requires_grad == grad


def test_tiny_shapes_and_cached_call_equals_uncached(tiny_model: HTBSR) -> None:
    cfg = tiny_model.config
    inp = _tiny_inputs(cfg)
    with torch.no_grad():
        full = tiny_model(**inp)
        cache = tiny_model.encode_source(*(inp[k] for k in SOURCE_KEYS))
        cached = tiny_model(*(inp[k] for k in FRAME_KEYS), cache=cache)
    out, mid = cfg.output_resolution, cfg.mid_resolution
    assert full.image.shape == (2, 3, out, out)
    assert full.torso_rgb.shape == full.sr_block1_in_rgb.shape == (2, 3, mid, mid)
    assert full.occlusion_2.shape == (2, 1, mid, mid)
    for f in dataclasses.fields(full):
        assert torch.equal(getattr(full, f.name), getattr(cached, f.name)), f.name


def test_tiny_batch1_cache_broadcasts_over_frames(tiny_model: HTBSR) -> None:
    inp = _tiny_inputs(tiny_model.config, batch=2, seed=1)
    with torch.no_grad():
        cache = tiny_model.encode_source(*(inp[k][:1] for k in SOURCE_KEYS))
        both = tiny_model(*(inp[k] for k in FRAME_KEYS), cache=cache)
        second = tiny_model(*(inp[k][1:] for k in FRAME_KEYS), cache=cache)
    torch.testing.assert_close(both.image[1:], second.image, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="batch"):
        tiny_model(*(inp[k][:1] for k in FRAME_KEYS), cache=tiny_model.encode_source(*(inp[k] for k in SOURCE_KEYS)))


def test_tiny_opaque_head_hides_torso_and_background(tiny_model: HTBSR) -> None:
    """Eq. 5: with head opacity 1 everywhere the person mask is 1 and neither torso nor background leaks in."""
    inp = _tiny_inputs(tiny_model.config, seed=2)
    inp["opacity128"] = torch.ones_like(inp["opacity128"])
    other = dict(inp, ref_torso_img=-inp["ref_torso_img"], bg_img=torch.zeros_like(inp["bg_img"]))
    with torch.no_grad():
        a, b = tiny_model(**inp), tiny_model(**other)
    assert torch.equal(a.person_alpha, torch.ones_like(a.person_alpha))
    assert torch.equal(a.sr_block1_in_rgb, a.sr_head_torso_block_rgb)
    assert not torch.equal(a.torso_rgb, b.torso_rgb)
    assert torch.equal(a.image, b.image)


def test_missing_source_raises(tiny_model: HTBSR) -> None:
    inp = _tiny_inputs(tiny_model.config)
    with pytest.raises(InputError, match="encode_source"):
        tiny_model(*(inp[k] for k in FRAME_KEYS))
    with pytest.raises(InputError, match="segmap"):
        tiny_model.encode_source(inp["ref_torso_img"], inp["bg_img"], inp["segmap"][:, :3])


def test_config_rejects_mismatched_torso_resolution() -> None:
    with pytest.raises(ValueError, match="2 \\* input_resolution"):
        HTBSRConfig(input_resolution=64, torso=TorsoWarpConfig.official())
    assert HTBSRConfig.official().output_resolution == 512


def test_tiny_save_load_round_trip(tiny_model: HTBSR, tmp_path) -> None:
    save_file(tiny_model.state_dict(), tmp_path / "htbsr.safetensors")
    torch.manual_seed(123)
    clone = HTBSR(HTBSRConfig.tiny()).eval()
    clone.load_state_dict(load_file(tmp_path / "htbsr.safetensors"), strict=True)
    inp = _tiny_inputs(tiny_model.config, seed=3)
    with torch.no_grad():
        a, b = tiny_model(**inp), clone(**inp)
    assert torch.equal(a.image, b.image)
    assert np.isfinite(a.image.numpy()).all()
