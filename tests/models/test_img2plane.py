"""Img2Plane: shapes, plane layout, checkpoint compatibility, and golden-tensor parity with the release."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from real3d.config.img2plane import Img2PlaneConfig
from real3d.errors import CheckpointError, InputError
from real3d.models.img2plane import Img2Plane, remap_official_state_dict, triplanes_from_features
from real3d.state_dict import load_state_dict_strict


def _tiny(seed: int = 0) -> Img2Plane:
    torch.manual_seed(seed)
    return Img2Plane(Img2PlaneConfig.tiny()).eval()


def _manifest_shapes(official_dir, prefix: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (official_dir / "manifest_secc2plane_torso.tsv").read_text().splitlines()[1:]:
        key, shape, _dtype, _init = line.split("\t")
        if key.startswith(prefix):
            out[key[len(prefix) :]] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return out


def test_tiny_forward_shape_and_dtype() -> None:
    model = _tiny()
    with torch.no_grad():
        planes = model(torch.rand(2, 3, 32, 48) * 2 - 1)
    assert planes.shape == (2, 3, 4, 16, 24)
    assert planes.dtype == torch.float32 and torch.isfinite(planes).all()
    model64 = _tiny().double()
    with torch.no_grad():
        assert model64(torch.zeros(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_plane_layout_and_flips() -> None:
    """Channel block k becomes plane k; planes 0/1 flip rows, plane 2 flips rows and columns."""
    c, h, w = 2, 3, 4
    feat = torch.zeros(1, 3 * c, h, w)
    for k in range(3):
        for ch in range(c):
            feat[0, k * c + ch] = 1000 * k + 100 * ch + torch.arange(h * w, dtype=torch.float32).view(h, w)
    planes = triplanes_from_features(feat, c)
    assert planes.shape == (1, 3, c, h, w)
    # pixel (row 0, col 0) of each plane comes from the documented source position
    assert planes[0, 0, 1, 0, 0].item() == 1000 * 0 + 100 * 1 + (h - 1) * w + 0
    assert planes[0, 1, 0, 0, 3].item() == 1000 * 1 + 0 + (h - 1) * w + 3
    assert planes[0, 2, 1, 0, 0].item() == 1000 * 2 + 100 + (h - 1) * w + (w - 1)
    torch.testing.assert_close(planes[0, 0], feat[0, :c].flip(-2))
    torch.testing.assert_close(planes[0, 1], feat[0, c : 2 * c].flip(-2))
    torch.testing.assert_close(planes[0, 2], feat[0, 2 * c :].flip(-2, -1))


def test_forward_is_flipped_features() -> None:
    model = _tiny()
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(img), triplanes_from_features(model.features(img), 4))


def test_positional_grid_reaches_the_network() -> None:
    """A constant image still gives spatially varying planes: the row/col grid channels are appended."""
    model = _tiny()
    with torch.no_grad():
        feat = model.features(torch.full((1, 3, 32, 32), -1.0))
    assert feat.std(dim=(-2, -1)).min() > 0


def test_backward_reaches_every_parameter() -> None:
    model = _tiny().train()
    planes = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    planes.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_state_dict_round_trip(tmp_path) -> None:
    a, b = _tiny(0), _tiny(1)
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    path = tmp_path / "i2p.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    with torch.no_grad():
        assert not torch.allclose(a(img), b(img))
        b.load_state_dict(load_file(str(path)), strict=True)
        torch.testing.assert_close(b(img), a(img), rtol=0, atol=0)


def test_strict_load_errors() -> None:
    model = _tiny()
    official_style = {f"cano_img2plane_backbone.{k}": v for k, v in model.state_dict().items()}
    official_style["decoder.net.0.weight"] = torch.zeros(1)  # another model's key: ignored by the remap
    load_state_dict_strict(model, remap_official_state_dict(official_style), "official Img2Plane")
    missing = dict(official_style)
    del missing["cano_img2plane_backbone.low_reso_vit.block1.attn.q.weight"]
    with pytest.raises(CheckpointError, match="missing.*low_reso_vit.block1.attn.q.weight"):
        load_state_dict_strict(model, remap_official_state_dict(missing), "official Img2Plane")
    with pytest.raises(CheckpointError, match="unexpected.*extra"):
        extra = {**official_style, "cano_img2plane_backbone.extra": torch.zeros(1)}
        load_state_dict_strict(model, remap_official_state_dict(extra), "official Img2Plane")
    with pytest.raises(CheckpointError, match="no 'cano_img2plane_backbone"):
        remap_official_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        sd = model.state_dict()
        del sd["high_reso_encoder.first.weight"]
        model.load_state_dict(sd, strict=True)


def test_input_errors() -> None:
    model = _tiny()
    with pytest.raises(InputError, match="divisible by 16"):
        model(torch.zeros(1, 3, 40, 32))
    with pytest.raises(InputError, match=r"\[B,3,H,W\]"):
        model(torch.zeros(1, 4, 32, 32))


def test_config_presets() -> None:
    cfg = Img2PlaneConfig.tiny()
    assert Img2PlaneConfig(**dataclasses.asdict(cfg)) == cfg
    assert Img2PlaneConfig.official() == Img2PlaneConfig()
    assert sum(p.numel() for p in Img2Plane(cfg).parameters()) < 50_000
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.vit_dim = 3  # type: ignore[misc]


def test_official_keys_and_shapes_match_manifest(official_dir) -> None:
    want = _manifest_shapes(official_dir, "cano_img2plane_backbone.")
    sd = Img2Plane(Img2PlaneConfig.official()).state_dict()
    assert list(sd) == list(want)
    assert {k: tuple(v.shape) for k, v in sd.items()} == want


def test_parity_with_official_checkpoint(torso_state_dict, torso_fixture) -> None:
    """Seed-0 official weights + fixture image reproduce the official canonical planes."""
    model = Img2Plane(Img2PlaneConfig.official())
    load_state_dict_strict(model, remap_official_state_dict(torso_state_dict), "official Img2Plane")
    model.eval()
    with torch.inference_mode():
        planes = model(torch.from_numpy(torso_fixture["img"]))
    ref = torch.from_numpy(torso_fixture["cano_planes"].astype(np.float32))
    assert planes.shape == ref.shape == (1, 3, 32, 256, 256)
    err = (planes - ref).abs()
    bound = 2e-3 + 1e-3 * ref.abs()
    assert (err <= bound).all(), f"max abs err {err.max():.3g}, worst err/bound {(err / bound).max():.3g}"
