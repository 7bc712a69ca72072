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
import os
import sys
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from real3d.errors import CheckpointError

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
    "audio2motion": ModelEntry("real3d.config.audio2motion:Audio2MotionConfig", "real3d.models.audio2motion:Audio2Motion"),
    "img2plane": ModelEntry("real3d.config.img2plane:Img2PlaneConfig", "real3d.models.img2plane:Img2Plane"),
    "motion_adapter": ModelEntry("real3d.config.motion_adapter:MotionAdapterConfig", "real3d.models.motion_adapter:MotionAdapter"),
    "real3d_portrait": ModelEntry(
        "real3d.config.real3d_portrait:Real3DPortraitConfig", "real3d.models.real3d_portrait:Real3DPortrait"
    ),
    "volume_renderer": ModelEntry("real3d.config.volume_renderer:VolumeRendererConfig", "real3d.models.volume_renderer:VolumeRenderer"),
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


# ----------------------------------------------------------------------------------------- atomic I/O
def _atomic_write(path: Path, write: typing.Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
        _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        _atomic_write(
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


def _list(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise `CheckpointError` listing every missing/unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_list(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_list(shapes)}")
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}: " + "; ".join(parts)
            + ". The checkpoint was made for a different model or config"
        )


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load with every key and shape checked; mismatches raise `CheckpointError` listing them all."""
    check_state_dict(model, state_dict, source)
    model.load_state_dict(dict(state_dict), strict=True)


def _meta_build_is_complete(model: nn.Module) -> bool:
    """True when every tensor of a meta-built module is in its state dict (no non-persistent buffers,
    no tied parameters, no plain tensor attributes), so assigning the state dict fully materialises it."""
    listed = set(model.state_dict())
    owned = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    owned |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    tied = len(list(model.named_parameters())) != len(list(model.named_parameters(remove_duplicate=False)))
    if listed != owned or tied:
        return False
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and value.is_meta:
                return False
    return True


def instantiate_with_weights(
    model_cls: type, config: Any, state_dict: Mapping[str, torch.Tensor], source: str
) -> nn.Module:
    """`model_cls(config)` with `state_dict` loaded strictly, in eval mode.

    The module is first built on the meta device (no random init, no memory), then the checkpoint
    tensors are assigned; a model with non-persistent buffers (not in any state dict) is built normally.
    """
    with torch.device("meta"):
        model = model_cls(config)
    if not _meta_build_is_complete(model):
        model = model_cls(config)  # tensors that no state dict holds: they must come from __init__
        load_state_dict_strict(model, state_dict, source)
        return model.eval()
    expected = model.state_dict()
    check_state_dict(model, state_dict, source)
    tensors = {k: state_dict[k].to(dtype=expected[k].dtype) for k in expected}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


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
