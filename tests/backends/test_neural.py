"""Neural backend pieces that need no rendering: where the checkpoints are found, the input size of the
networks, and a missing asset. The whole path end to end is in `test_neural_official.py`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from real3d.backends.neural import _find_model_dir, input_image_size
from real3d.errors import CheckpointError, DependencyError


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory):
    """Tiny checkpoints: official-format folders with non-release names, and a converted torso folder."""
    from real3d.config.audio2motion import Audio2MotionConfig
    from real3d.config.real3d_portrait import Real3DPortraitConfig
    from real3d.models.audio2motion import Audio2Motion
    from real3d.models.real3d_portrait import Real3DPortrait
    from real3d.weights.convert import save_official_format
    from real3d.weights.io import save_pretrained
    from real3d.weights.official_sizes import with_released_hyperparameters

    root = tmp_path_factory.mktemp("ckpts")
    base = Real3DPortraitConfig.tiny()
    cfg = with_released_hyperparameters(
        replace(base, motion_adapter=replace(base.motion_adapter, embed_dims=(4, 8, 20, 32)))
    )
    torch.manual_seed(0)
    torso = Real3DPortrait(cfg).eval()
    save_official_format(torso, root / "official" / "model_a")
    save_official_format(Audio2Motion(Audio2MotionConfig.tiny()).eval(), root / "official" / "model_b")
    save_pretrained(torso, cfg, root / "converted" / "anything")
    return root


def test_official_folders_are_found_by_their_task_not_their_name(ckpt_root):
    official = ckpt_root / "official"
    assert _find_model_dir(official, "generator") == official / "model_a"
    assert _find_model_dir(official, "a2m") == official / "model_b"
    # a torso folder passed as --checkpoints itself is never taken for the A2M
    assert _find_model_dir(official / "model_a", "generator") == official / "model_a"
    with pytest.raises(CheckpointError, match="no a2m checkpoint under .*model_a.*audio2secc_vae"):
        _find_model_dir(official / "model_a", "a2m")


def test_converted_folders_are_found_by_their_model_type(ckpt_root):
    converted = ckpt_root / "converted"
    assert json.loads((converted / "anything" / "config.json").read_text())["model_type"] == "real3d_portrait"
    assert _find_model_dir(converted, "generator") == converted / "anything"
    with pytest.raises(CheckpointError, match="no a2m checkpoint"):
        _find_model_dir(converted, "a2m")


def test_input_image_size_is_the_frame_size():
    """Head image and PNCC maps are made at the size I2P and MA read: the frame size of the config."""
    from types import SimpleNamespace

    from real3d.config.real3d_portrait import Real3DPortraitConfig

    assert input_image_size(Real3DPortraitConfig.official()) == 512  # the official SECC size
    assert input_image_size(Real3DPortraitConfig.tiny()) == 32
    with pytest.raises(CheckpointError, match="multiple of 16"):
        input_image_size(SimpleNamespace(image_resolution=24))


def test_missing_bfm_is_a_clear_error(ckpt_root, tmp_path, monkeypatch):
    from PIL import Image
    from skimage import data

    from real3d.pipeline import AnimateOptions, Pipeline

    monkeypatch.delenv("REAL3D_BFM", raising=False)
    monkeypatch.setenv("REAL3D_CONFIG", str(tmp_path / "none.toml"))
    src = tmp_path / "src.png"
    Image.fromarray(data.astronaut()).save(src)
    driver = tmp_path / "driver.mp4"  # never opened: the assets are checked first
    out = tmp_path / "x.mp4"
    opts = AnimateOptions(
        source=src, output=out, backend="neural", video=driver, checkpoints=ckpt_root / "official", quiet=True
    )
    with pytest.raises(DependencyError, match="--bfm"):
        Pipeline()(opts)
    assert not out.exists()
