"""MotionAdapter: shapes, plane layout, checkpoint compatibility, and golden-tensor parity with the release."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from real3d.config.motion_adapter import MotionAdapterConfig
from real3d.errors import CheckpointError, InputError
from real3d.models.img2plane import triplanes_from_features
from real3d.models.motion_adapter import MotionAdapter, remap_official_state_dict
from real3d.state_dict import load_state_dict_strict

PREFIX = "secc_img2plane_backbone."


def _tiny(seed: int = 0) -> MotionAdapter:
    torch.manual_seed(seed)
    return MotionAdapter(MotionAdapterConfig.tiny()).eval()


def _pnccs(b: int = 1, h: int = 32, w: int = 32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(b, 3, h, w, generator=g) * 2 - 1 for _ in range(3))


def test_tiny_forward_shape_and_dtype() -> None:
    model = _tiny()
    with torch.no_grad():
        planes = model(*_pnccs(2, 32, 48))
    assert planes.shape == (2, 3, 4, 16, 24)
    assert planes.dtype == torch.float32 and torch.isfinite(planes).all()
    model64 = _tiny().double()
    with torch.no_grad():
        out = model64(*(p.double() for p in _pnccs()))
    assert out.dtype == torch.float64


def test_forward_is_flipped_features_and_inputs_are_ordered() -> None:
    model = _tiny()
    cano, src, tgt = _pnccs()
    with torch.no_grad():
        torch.testing.assert_close(model(cano, src, tgt), triplanes_from_features(model.features(cano, src, tgt), 4))
        # the prenet sees the maps in (cano, src, tgt) channel order: permuting them changes the output
        assert not torch.allclose(model(cano, src, tgt), model(tgt, src, cano))
        # and the prenet is the equalized-lr 1x1 conv: weight * 1/sqrt(9)
        x = torch.cat([cano, src, tgt], dim=1)
        want = torch.einsum("oi,bihw->bohw", model.prenet.weight[:, :, 0, 0] / 3.0, x)
        want = want + model.prenet.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(model.prenet(x), want, rtol=1e-5, atol=1e-5)


def test_backward_reaches_every_parameter() -> None:
    model = _tiny().train()
    planes = model(*_pnccs(2))
    planes.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_state_dict_round_trip(tmp_path) -> None:
    a, b = _tiny(0), _tiny(1)
    maps = _pnccs()
    path = tmp_path / "ma.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    with torch.no_grad():
        assert not torch.allclose(a(*maps), b(*maps))
        b.load_state_dict(load_file(str(path)), strict=True)
        torch.testing.assert_close(b(*maps), a(*maps), rtol=0, atol=0)


def test_strict_load_errors() -> None:
    model = _tiny()
    official_style = {PREFIX + k: v for k, v in model.state_dict().items()}
    official_style["cano_img2plane_backbone.final.weight"] = torch.zeros(1)  # the I2P's key: ignored
    load_state_dict_strict(model, remap_official_state_dict(official_style), "official MotionAdapter")
    missing = dict(official_style)
    del missing[PREFIX + "fuse_head.linear_fuse.bn.running_var"]
    with pytest.raises(CheckpointError, match="missing.*linear_fuse.bn.running_var"):
        load_state_dict_strict(model, remap_official_state_dict(missing), "official MotionAdapter")
    wrong = dict(official_style)
    wrong[PREFIX + "prenet.weight"] = torch.zeros(3, 6, 1, 1)  # a `cano_tgt` (6-channel) prenet
    with pytest.raises(CheckpointError, match="shape mismatch.*prenet.weight"):
        load_state_dict_strict(model, remap_official_state_dict(wrong), "official MotionAdapter")
    with pytest.raises(CheckpointError, match="no 'secc_img2plane_backbone"):
        remap_official_state_dict(model.state_dict())


def test_input_errors() -> None:
    model = _tiny()
    cano, src, tgt = _pnccs()
    with pytest.raises(InputError, match="src"):
        model(cano, src[..., :16], tgt)
    with pytest.raises(InputError, match="divisible by 4"):
        model(*_pnccs(1, 30, 32))


def test_config_presets() -> None:
    cfg = MotionAdapterConfig.tiny()
    assert MotionAdapterConfig(**dataclasses.asdict(cfg)) == cfg
    assert MotionAdapterConfig.official() == MotionAdapterConfig()
    assert MotionAdapterConfig.official().in_channels == 9
    assert sum(p.numel() for p in MotionAdapter(cfg).parameters()) < 20_000


def test_official_keys_and_shapes_match_manifest(official_dir) -> None:
    want = {}
    for line in (official_dir / "manifest_secc2plane_torso.tsv").read_text().splitlines()[1:]:
        key, shape, _dtype, _init = line.split("\t")
        if key.startswith(PREFIX):
            want[key[len(PREFIX) :]] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    model = MotionAdapter(MotionAdapterConfig.official())
    sd = model.state_dict()
    assert list(sd) == list(want)
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert sum(p.numel() for p in model.parameters()) == 5_705_694


def test_parity_with_official_checkpoint(torso_state_dict, torso_fixture) -> None:
    """Seed-0 official weights + fixture PNCCs reproduce the official motion-adapter planes."""
    model = MotionAdapter(MotionAdapterConfig.official())
    load_state_dict_strict(model, remap_official_state_dict(torso_state_dict), "official MotionAdapter")
    model.eval()
    maps = [torch.from_numpy(torso_fixture[k]) for k in ("cond_cano", "cond_src", "cond_tgt")]
    with torch.inference_mode():
        planes = model(*maps)
    ref = torch.from_numpy(torso_fixture["secc_planes"].astype(np.float32))
    assert planes.shape == ref.shape == (1, 3, 32, 256, 256)
    err = (planes - ref).abs()
    bound = 2e-3 + 1e-3 * ref.abs()
    assert (err <= bound).all(), f"max abs err {err.max():.3g}, worst err/bound {(err / bound).max():.3g}"
