"""Our checkpoint format: bit-exact round trips, strict loading with readable key lists, the model
registry, config JSON (tuples, nested dataclasses), atomic writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from real3d.config.audio2motion import tiny
from real3d.errors import CheckpointError
from real3d.models.audio2motion import Audio2Motion
from real3d.state_dict import load_state_dict_strict
from real3d.weights import io


@dataclass(frozen=True)
class _Inner:
    taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)
    """A tuple field."""


@dataclass(frozen=True)
class _ToyConfig:
    width: int = 3
    """Channels."""
    inner: _Inner = field(default_factory=_Inner)
    """A nested config."""
    act: str = "relu"
    """Activation."""


class _Toy(nn.Module):
    def __init__(self, config: _ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.width, config.width)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs dominate


@pytest.fixture
def toy_registered():
    io.register_model("toy_for_tests", _ToyConfig, _Toy)
    yield
    io.MODEL_REGISTRY.pop("toy_for_tests")


def test_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = Audio2Motion(tiny())
    with torch.no_grad():
        model.mel_encoder[1].running_var.uniform_(0.5, 2.0)  # buffers travel too
        model.mel_encoder[1].num_batches_tracked.fill_(7)
    out = io.save_pretrained(model, model.config, tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    payload = json.loads((out / "config.json").read_text())
    assert payload["model_type"] == "audio2motion" and payload["config"]["latent_dim"] == tiny().latent_dim
    loaded = io.from_pretrained(out)
    assert type(loaded) is Audio2Motion and loaded.config == model.config
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert list(sd_a) == list(sd_b)
    for k in sd_a:
        assert sd_a[k].dtype == sd_b[k].dtype and torch.equal(sd_a[k], sd_b[k]), k
    # saving again over an existing checkpoint replaces it
    with torch.no_grad():
        model.cond_proj.bias.add_(1.0)
    io.save_pretrained(model, None, out)
    assert torch.equal(io.from_pretrained(out).cond_proj.bias, model.cond_proj.bias)


def test_strict_load_lists_every_problem():
    model = Audio2Motion(tiny())
    sd = dict(model.state_dict())
    del sd["cond_proj.bias"], sd["blink_embed.weight"]
    sd["vae.extra.weight"] = torch.zeros(1)
    sd["pitch_embed.weight"] = torch.zeros(5, 8)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(model, sd, "test.safetensors")
    msg = str(info.value)
    assert "test.safetensors" in msg
    assert "missing keys (2): blink_embed.weight, cond_proj.bias" in msg  # in model order
    assert "unexpected keys (1): vae.extra.weight" in msg
    assert "pitch_embed.weight: checkpoint (5, 8) vs model (300, 8)" in msg


def test_from_pretrained_rejects_tampered_weights(tmp_path):
    model = Audio2Motion(tiny())
    io.save_pretrained(model, None, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["surplus"] = torch.ones(2)
    del tensors["mouth_amp_embed"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): mouth_amp_embed.*unexpected keys \(1\): surplus"):
        io.from_pretrained(tmp_path)


def test_config_errors(tmp_path):
    model = Audio2Motion(tiny())
    io.save_pretrained(model, None, tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**payload, "model_type": "nonexistent"}))
    with pytest.raises(CheckpointError, match="nonexistent.*known: .*audio2motion"):
        io.from_pretrained(tmp_path)
    payload["config"]["new_field"] = 1
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match=r"\['new_field'\] are unknown to Audio2MotionConfig"):
        io.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a real3d config"):
        io.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="config.json not found"):
        io.from_pretrained(tmp_path / "missing")


def test_missing_fields_take_defaults():
    cfg = io.config_from_dict(type(tiny()), {"latent_dim": 6})
    assert cfg.latent_dim == 6 and cfg.hidden_dim == type(tiny())().hidden_dim


def test_registry_one_line_and_nested_config(tmp_path, toy_registered):
    cfg = _ToyConfig(width=4, inner=_Inner(taps=(1.0, 2.0)), act="lrelu")
    model = _Toy(cfg)
    model.steps.fill_(11)
    io.save_pretrained(model, cfg, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "toy_for_tests"
    loaded = io.from_pretrained(tmp_path)
    assert isinstance(loaded, _Toy) and loaded.config == cfg  # tuple and nested dataclass restored
    assert isinstance(loaded.config.inner.taps, tuple) and loaded.steps.item() == 11
    assert torch.equal(loaded.lin.weight, model.lin.weight)


def test_unregistered_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="MODEL_REGISTRY"):
        io.save_pretrained(_Toy(_ToyConfig()), _ToyConfig(), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("model_type", sorted(io.MODEL_REGISTRY))
def test_every_registered_model_round_trips_with_its_tiny_preset(tmp_path, model_type):
    entry = io.MODEL_REGISTRY[model_type]
    config = entry.config_class().tiny()
    torch.manual_seed(0)
    model = entry.model_class()(config)
    io.save_pretrained(model, config, tmp_path)
    loaded = io.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.config == config
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


@pytest.mark.parametrize("model_type", ["htbsr", "torso_warp", "hubert"])
def test_every_network_round_trips_through_config_json(tmp_path, model_type):
    """HTB-SR, the torso warp and HuBERT are registered: save_pretrained + from_pretrained rebuild them exactly."""
    entry = io.MODEL_REGISTRY[model_type]
    config = entry.config_class().tiny()
    torch.manual_seed(0)
    model = entry.model_class()(config).eval()
    loaded = io.from_pretrained(io.save_pretrained(model, config, tmp_path / model_type))
    assert type(loaded) is type(model) and loaded.config == config
    assert io.read_config(tmp_path / model_type)[0] == model_type
    want, got = model.state_dict(), loaded.state_dict()
    assert list(want) == list(got) and all(torch.equal(want[k], got[k]) for k in want)
