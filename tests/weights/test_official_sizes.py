"""Torso config from an official state dict: every size read from the tensor shapes, cross-checked
with config.yaml; the seed-0 official-size checkpoint gives `Real3DPortraitConfig.official()`, tiny
official-format checkpoints round-trip, and wrong inputs give readable `CheckpointError`s."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch
import yaml

from real3d.config.real3d_portrait import Real3DPortraitConfig
from real3d.errors import CheckpointError
from real3d.models.real3d_portrait import Real3DPortrait
from real3d.weights.convert import load_official_model, official_hparams, save_official_format
from real3d.weights.official_sizes import (
    RELEASED_FLAGS,
    official_torso_hparams,
    torso_config_from_official,
    with_released_hyperparameters,
)


def _tiny_official() -> Real3DPortraitConfig:
    """`tiny()` with MiT widths that split into the released head counts (1, 2, 5, 8)."""
    base = Real3DPortraitConfig.tiny()
    return with_released_hyperparameters(
        replace(base, motion_adapter=replace(base.motion_adapter, embed_dims=(4, 8, 20, 32)))
    )


@pytest.fixture(scope="module")
def tiny_model() -> Real3DPortrait:
    torch.manual_seed(0)
    return Real3DPortrait(_tiny_official()).eval()


@pytest.fixture(scope="module")
def official_yaml(official_dir) -> dict:
    return yaml.safe_load((official_dir / "config_secc2plane_torso.yaml").read_text())


def _diff(a, b, prefix: str = "") -> list[str]:
    """Dotted names of the config fields that differ."""
    out = []
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x):
            out += _diff(x, y, prefix + f.name + ".")
        elif x != y:
            out.append(f"{prefix}{f.name}: {x} vs {y}")
    return out


def test_seed0_official_checkpoint_gives_the_official_config(torso_state_dict, official_yaml):
    official = Real3DPortraitConfig.official()
    cfg = torso_config_from_official(torso_state_dict, official_yaml)
    assert _diff(cfg, official) == [] and cfg == official
    assert torso_config_from_official(torso_state_dict, None) == official  # shapes alone suffice
    # the writer's config.yaml entries are the released yaml's values
    written = official_torso_hparams(official)
    assert {k: official_yaml[k] for k in written if k in official_yaml} == {
        k: v for k, v in written.items() if k in official_yaml
    }
    assert set(written) - set(official_yaml) == set()


def test_tiny_official_format_round_trip(tiny_model, tmp_path):
    cfg = tiny_model.config
    path = save_official_format(tiny_model, tmp_path / "secc2plane_torso")
    assert path.name == "model_ckpt_steps_100000.ckpt"
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # legacy pickle, not a zip archive
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"epoch", "global_step", "state_dict", "optimizer_states"} and raw["global_step"] == 100000
    assert list(raw["state_dict"]["model"]) == list(tiny_model.state_dict())  # official key names, same order
    hp = yaml.safe_load((path.parent / "config.yaml").read_text())
    assert hp["neural_rendering_resolution"] == 8 and hp["final_resolution"] == 32 and hp["triplane_hid_dim"] == 8
    assert {k: hp[k] for k in RELEASED_FLAGS} == RELEASED_FLAGS

    model, read_cfg, kind = load_official_model(path.parent)
    assert kind.name == "secc2plane_torso" and read_cfg == cfg, _diff(read_cfg, cfg)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_sizes_come_from_the_shapes_not_the_preset(tiny_model):
    sd = tiny_model.state_dict()
    hp = official_hparams(tiny_model)
    cfg = torso_config_from_official(sd, hp)
    assert cfg.img2plane.resnet_blocks == (1, 1, 1, 1) and cfg.img2plane.resnet_widths == (4, 8, 8, 16)
    assert cfg.motion_adapter.embed_dims == (4, 8, 20, 32) and cfg.motion_adapter.depths == (1, 1, 1, 1)
    assert cfg.motion_adapter.mlp_ratios == (2.0,) * 4 and cfg.motion_adapter.sr_ratios == (8, 4, 2, 1)
    assert cfg.htbsr.torso.hourglass_channels == (8, 16) and cfg.htbsr.torso.generator_channels == (16, 8, 8)
    assert cfg.renderer.num_samples_coarse == 4 and cfg.image_resolution == 32
    # sampling and head threshold are config.yaml's
    cfg2 = torso_config_from_official(sd, dict(hp, num_samples_fine=6, htbsr_head_threshold=0.5, box_warp=2))
    assert (cfg2.renderer.num_samples_fine, cfg2.htbsr.head_threshold, cfg2.renderer.box_warp) == (6, 0.5, 2.0)


def test_unsupported_switches_and_disagreeing_yaml_are_refused(tiny_model):
    sd, hp = tiny_model.state_dict(), official_hparams(tiny_model)
    with pytest.raises(
        CheckpointError, match="selects {.triplane_feature_type.: .trigrid_v2.}, which real3d does not implement"
    ):
        torso_config_from_official(sd, dict(hp, triplane_feature_type="trigrid_v2"))
    with pytest.raises(CheckpointError, match="does not implement"):
        torso_config_from_official(sd, dict(hp, img2plane_input_mode="rgb_alpha"))
    with pytest.raises(CheckpointError, match="triplane_hid_dim: 32 but the weights have 8.*do not belong together"):
        torso_config_from_official(sd, dict(hp, triplane_hid_dim=32))
    with pytest.raises(CheckpointError, match="final_resolution 64"):
        torso_config_from_official(sd, dict(hp, final_resolution=64))
    with pytest.raises(CheckpointError, match="unusable num_samples_coarse"):
        torso_config_from_official(sd, dict(hp, num_samples_coarse="many"))


def test_missing_tensor_and_foreign_state_dict(tiny_model, a2m_tiny_sd):
    sd = dict(tiny_model.state_dict())
    del sd["superresolution.block0.conv0.noise_const"]
    with pytest.raises(CheckpointError, match=r"no 'superresolution\.block0\.conv0\.noise_const'.*secc2plane_torso"):
        torso_config_from_official(sd)
    with pytest.raises(CheckpointError, match="no 'superresolution"):
        torso_config_from_official(a2m_tiny_sd)


@pytest.fixture(scope="module")
def a2m_tiny_sd() -> dict:
    from real3d.config.audio2motion import Audio2MotionConfig
    from real3d.models.audio2motion import Audio2Motion

    return Audio2Motion(Audio2MotionConfig.tiny()).state_dict()


def test_wrong_shaped_tensor_gives_the_readable_list(tiny_model, tmp_path):
    sd = dict(tiny_model.state_dict())
    key = "superresolution.bg_encoder.2.weight"  # a shape no size is read from
    sd[key] = torch.zeros(16, 9, 3, 3)
    sd["superresolution.extra.weight"] = torch.zeros(1)
    ckpt = {"epoch": 0, "global_step": 1, "state_dict": {"model": sd}, "optimizer_states": []}
    out = tmp_path / "bad"
    out.mkdir()
    torch.save(ckpt, out / "model_ckpt_steps_1.ckpt", _use_new_zipfile_serialization=False)
    (out / "config.yaml").write_text(yaml.safe_dump(official_hparams(tiny_model)))
    with pytest.raises(CheckpointError) as info:
        load_official_model(out)
    msg = str(info.value)
    assert "model_ckpt_steps_1.ckpt" in msg
    assert f"shape mismatches (1): {key}: checkpoint (16, 9, 3, 3) vs model (16, 8, 3, 3)" in msg
    assert "unexpected keys (1): superresolution.extra.weight" in msg


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbled_header"])
def test_damaged_ckpt_names_the_file(tiny_model, tmp_path, damage):
    good = save_official_format(tiny_model, tmp_path / "good").read_bytes()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "config.yaml").write_text(yaml.safe_dump(official_hparams(tiny_model)))
    data = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbled_header": bytes(b ^ 0xFF for b in good[:40]) + good[40:],
    }[damage]
    path = bad_dir / "model_ckpt_steps_100000.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="model_ckpt_steps_100000.ckpt") as info:
        load_official_model(bad_dir)
    msg = str(info.value)
    assert "refusing" not in msg  # damage is reported as damage, not as a security refusal
    assert ("truncated" if damage != "garbled_header" else "damaged") in msg


def test_writer_refuses_what_the_format_cannot_record(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match=r"cannot record img2plane\.atrous_rates: \(1, 2, 3\) vs \(12, 24, 36\);"):
        save_official_format(Real3DPortrait(Real3DPortraitConfig.tiny()), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_released_hyperparameters_need_compatible_widths():
    with pytest.raises(ValueError, match=r"\(12, 5\)"):
        with_released_hyperparameters(Real3DPortraitConfig.tiny())  # MiT width 12 cannot take 5 heads
    cfg = _tiny_official()
    assert cfg.motion_adapter.num_heads == (1, 2, 5, 8) and cfg.img2plane.atrous_rates == (12, 24, 36)
    assert with_released_hyperparameters(Real3DPortraitConfig.official()) == Real3DPortraitConfig.official()
