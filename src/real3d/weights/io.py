"""Our checkpoint format: a directory with `model.safetensors` + `config.json`.

`config.json` is the model's config dataclass as JSON plus a `model_type` field; `from_pretrained(dir)`
looks the type up in `MODEL_REGISTRY`, rebuilds the config and the module, and loads the tensors
strictly (missing/unexpected keys and shape mismatches raise `CheckpointError` with the full list).
Files are written atomically (temporary file in the same directory, then rename).

Adding a model is one line in `MODEL_REGISTRY` (lazy "module:Class" paths, so nothing is imported
until it is needed), or a `register_model(...)` call at run time.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from real3d.errors import CheckpointError
from real3d.io.atomic import atomic_write
from real3d.state_dict import instantiate_with_weights

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelEntry:
    """Where the config dataclass and the module class of one model type live ("module:Name")."""

    config: str
    model: str

    def config_class(self) -> type:
        return _import(self.config)

    def model_class(self) -> type:
        return _import(self.model)


# model_type -> (config class, model class). One line per model.
MODEL_REGISTRY: dict[str, ModelEntry] = {
    "audio2motion": ModelEntry(
        "real3d.config.audio2motion:Audio2MotionConfig", "real3d.models.audio2motion:Audio2Motion"
    ),
    "htbsr": ModelEntry("real3d.config.htbsr:HTBSRConfig", "real3d.models.htbsr:HTBSR"),
    "hubert": ModelEntry("real3d.config.hubert:HubertConfig", "real3d.models.hubert:Hubert"),
    "img2plane": ModelEntry("real3d.config.img2plane:Img2PlaneConfig", "real3d.models.img2plane:Img2Plane"),
    "motion_adapter": ModelEntry(
        "real3d.config.motion_adapter:MotionAdapterConfig", "real3d.models.motion_adapter:MotionAdapter"
    ),
    "real3d_portrait": ModelEntry(
        "real3d.config.real3d_portrait:Real3DPortraitConfig", "real3d.models.real3d_portrait:Real3DPortrait"
    ),
    "torso_warp": ModelEntry("real3d.config.htbsr:TorsoWarpConfig", "real3d.models.torso_warp:TorsoWarp"),
    "volume_renderer": ModelEntry(
        "real3d.config.volume_renderer:VolumeRendererConfig", "real3d.models.volume_renderer:VolumeRenderer"
    ),
}


def register_model(model_type: str, config: str | type, model: str | type) -> None:
    """Add (or replace) a model type; classes may be given as objects or as "module:Name" strings."""

    def path(obj: str | type) -> str:
        return obj if isinstance(obj, str) else f"{obj.__module__}:{obj.__qualname__}"

    MODEL_REGISTRY[model_type] = ModelEntry(path(config), path(model))


def _import(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def model_type_of(model: nn.Module) -> str:
    """The registry key of a model: its `model_type` class attribute, else a registry match on its class."""
    declared = getattr(type(model), "model_type", None)
    if isinstance(declared, str):
        if declared not in MODEL_REGISTRY:
            raise CheckpointError(f"model type '{declared}' is not in real3d.weights.io.MODEL_REGISTRY; register it")
        return declared
    cls_path = f"{type(model).__module__}:{type(model).__qualname__}"
    for key, entry in MODEL_REGISTRY.items():
        if entry.model == cls_path:
            return key
    raise CheckpointError(f"{cls_path} is not in real3d.weights.io.MODEL_REGISTRY; add a line for it")


# ----------------------------------------------------------------------------------------- config JSON
def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-ready data (nested dataclasses become dicts, tuples lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _coerce(value: Any, hint: Any) -> Any:
    """Turn JSON data back into the annotated type (dataclass, tuple); other values pass through."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return config_from_dict(arg, value)
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return _coerce(value, arg)
        return value
    if (hint is tuple or origin is tuple) and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        return tuple(value)
    return value


def config_from_dict(config_cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from `config_to_dict` output. Unknown fields raise; absent ones take
    their defaults (so configs written by older versions still load), and a config class may rename old
    fields in a static `upgrade(data) -> data`."""
    upgrade = getattr(config_cls, "upgrade", None)
    if callable(upgrade):
        data = upgrade(data)
    hints = typing.get_type_hints(config_cls, globalns=vars(sys.modules[config_cls.__module__]))
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(
            f"config fields {unknown} are unknown to {config_cls.__name__}; the checkpoint was written by a "
            "newer or different real3d version"
        )
    return config_cls(**{k: _coerce(v, hints.get(k)) for k, v in data.items()})


def save_pretrained(model: nn.Module, config: Any | None, directory: str | Path) -> Path:
    """Write `model.safetensors` + `config.json` into `directory` (created if needed); returns it.
    `config` defaults to `model.config`."""
    directory = Path(directory)
    config = getattr(model, "config", None) if config is None else config
    if config is None:
        raise CheckpointError(f"{type(model).__name__} has no config; pass it to save_pretrained")
    model_type = model_type_of(model)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "model_type": model_type}
    payload = {"model_type": model_type, "format_version": FORMAT_VERSION, "config": config_to_dict(config)}
    try:
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        atomic_write(
            directory / CONFIG_NAME,
            lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8"),
        )
    except OSError as err:
        raise CheckpointError(f"cannot write the checkpoint to {directory}: {err}") from None
    log.info("saved %s (%d tensors) to %s", model_type, len(tensors), directory)
    return directory


def read_config(directory: str | Path) -> tuple[str, Any]:
    """(model_type, config dataclass) from `directory/config.json`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found; pass a directory written by real3d (model.safetensors + config.json)")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        model_type, data = payload["model_type"], payload["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a real3d config ({type(err).__name__}: {err})") from None
    if model_type not in MODEL_REGISTRY:
        raise CheckpointError(
            f"{path} is for model type '{model_type}', which this real3d does not know "
            f"(known: {', '.join(sorted(MODEL_REGISTRY))})"
        )
    return model_type, config_from_dict(MODEL_REGISTRY[model_type].config_class(), data)


def from_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the exact module saved by `save_pretrained`, in eval mode."""
    directory = Path(directory)
    model_type, config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found; the checkpoint directory is incomplete")
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {weights} ({err}); the file is corrupt or truncated") from None
    model = instantiate_with_weights(MODEL_REGISTRY[model_type].model_class(), config, tensors, str(weights))
    return model.to(map_location)
