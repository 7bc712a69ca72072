"""Official checkpoints -> our modules: kind detection, on-the-fly loading, conversion, and the official-format
writer, on tiny models (no downloaded weights)."""

from dataclasses import replace

import pytest
import torch

from real3d.config.audio2motion import Audio2MotionConfig
from real3d.config.real3d_portrait import Real3DPortraitConfig
from real3d.errors import CheckpointError
from real3d.models.audio2motion import Audio2Motion
from real3d.models.real3d_portrait import Real3DPortrait
from real3d.weights.convert import (
    OFFICIAL_KINDS,
    convert_official,
    detect_kind,
    load_checkpoint,
    load_official_model,
    save_official_format,
)
from real3d.weights.io import read_config
from real3d.weights.official import load_official_checkpoint
from real3d.weights.official_sizes import with_released_hyperparameters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Tiny A2M and generator written in the official layout (config.yaml + model_ckpt_steps_N.ckpt)."""
    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    a2m = Audio2Motion(Audio2MotionConfig.tiny()).eval()
    base = Real3DPortraitConfig.tiny()
    gen_cfg = with_released_hyperparameters(
        replace(base, motion_adapter=replace(base.motion_adapter, embed_dims=(4, 8, 20, 32)))
    )
    gen = Real3DPortrait(gen_cfg).eval()
    return {
        "a2m": (a2m, save_official_format(a2m, root / "audio2secc_vae", step=7)),
        "torso": (gen, save_official_format(gen, root / "secc2plane_torso")),
    }


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("name", "kind"), [("a2m", "audio2secc_vae"), ("torso", "secc2plane_torso")])
def test_kind_detection_and_loading(official, name, kind):
    model, path = official[name]
    assert path.name.startswith("model_ckpt_steps_") and (path.parent / "config.yaml").is_file()
    assert detect_kind(load_official_checkpoint(path.parent)).name == kind
    loaded, config, found = load_official_model(path.parent)
    assert found is OFFICIAL_KINDS[kind] and type(loaded) is type(model) and config == model.config
    assert _same_weights(loaded, model) and not loaded.training


def test_conversion_round_trip(official, tmp_path):
    model, path = official["a2m"]
    out = convert_official(path.parent, tmp_path / "ours")
    assert read_config(out)[0] == "audio2motion"
    assert _same_weights(load_checkpoint(out), model)  # our format
    assert _same_weights(load_checkpoint(path.parent), model)  # the official one, converted on the fly
    assert _same_weights(load_checkpoint(path), model)  # a .ckpt file directly


def test_unknown_checkpoint_is_refused_with_the_known_kinds(tmp_path):
    d = tmp_path / "other"
    d.mkdir()
    torch.save({"state_dict": {"model": {"encoder.weight": torch.zeros(2, 2)}}}, d / "model_ckpt_steps_1.ckpt")
    with pytest.raises(CheckpointError) as err:
        load_official_model(d)
    assert "audio2secc_vae" in str(err.value) and "secc2plane_torso" in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist; pass an official checkpoint directory"):
        load_checkpoint(tmp_path / "missing")
