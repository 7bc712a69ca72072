"""Helpers for PyTorch state dicts, used by every layer that loads weights (models, weights, eval nets).

Strict checks (every missing/unexpected key and shape mismatch listed in one `CheckpointError`), loading
into a module built on the meta device, reading a pickle with `torch.load(weights_only=True)` (nothing in
it can run code), and the small key-selection helpers of the official-checkpoint remaps.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from real3d.errors import CheckpointError


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
            f"{source} does not match {type(model).__name__}: "
            + "; ".join(parts)
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


def _numpy_safe_globals() -> list[Any]:
    """numpy scalar/dtype reconstructors, which real checkpoints keep in `checkpoint_callback_best`.
    They only rebuild numbers from bytes, so allowing them keeps `weights_only` safe."""
    allowed: list[Any] = [np.dtype]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed.append(scalar)
    allowed.extend(type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool"))
    return allowed


def _refusal_reason(message: str) -> str:
    """The line of torch's weights-only error that names the refused object (not its generic advice)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "nsupported" in ln:
            return ln
    return "disallowed pickle content"


def load_pickle_weights_only(path: Path) -> Any:
    """`torch.load(path, weights_only=True)` on CPU, with errors turned into `CheckpointError`."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _refusal_reason(str(err))
        if "global" not in str(err).lower():  # e.g. "Unsupported operand": damaged bytes, not a refused object
            raise CheckpointError(
                f"cannot read {path} as a PyTorch checkpoint ({detail}); the file is damaged "
                "or not a checkpoint: download it again"
            ) from None
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled objects other than tensors and plain containers, "
            f"which could run code on load ({detail}). Official Real3D-Portrait checkpoints need none; "
            "use the file from the official release, or re-save only its tensors (state_dict['model']) from "
            "a trusted environment"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({type(err).__name__}: {err}); the file may be "
            "truncated or not a checkpoint: download it again"
        ) from None


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of an official generator state dict under `prefix`, with the prefix stripped.

    Raises CheckpointError when there are none (the caller passed another model's weights)."""
    out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointError(
            f"no '{prefix}*' tensors in the state dict; pass the generator weights (ckpt['state_dict']['model']) "
            "of an official secc2plane / secc2plane_torso checkpoint"
        )
    return out


def count_indices(state_dict: Mapping[str, Any], pattern: str) -> int:
    """How many distinct values the group `(\\d+)` of `pattern` (a regex matching whole keys) takes over
    the keys of `state_dict`, e.g. the number of layers `enc\\.layers\\.(\\d+)\\.weight` of a module list."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state_dict if (m := rx.fullmatch(k))})
