"""Strict loading of user-supplied metric weights (.pth/.pt via `torch.load(weights_only=True)`, or .safetensors)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from real3d.errors import CheckpointError, DependencyError
from real3d.state_dict import check_state_dict


def read_state_dict(path: str | Path, expected: str) -> dict[str, torch.Tensor]:
    """Tensors of a weight file. `expected` names the file the metric wants (used in every error message).

    A missing file raises DependencyError; an unreadable or foreign one CheckpointError.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DependencyError(f"weight file {p} not found; this metric needs the user-supplied {expected}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types for a corrupt or unsafe file
        raise CheckpointError(
            f"cannot read {p} as a weight file ({type(e).__name__}: {e}); this metric expects {expected}"
        ) from e
    for key in ("state_dict", "model", "net"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{p} does not hold a flat state dict of tensors; this metric expects {expected}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_strict(
    module: nn.Module,
    sd: Mapping[str, torch.Tensor],
    source: str,
    expected: str,
    remap: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """Load `sd` (after `remap`) into `module`; missing/unexpected keys or shape mismatches raise CheckpointError."""
    sd = dict(remap(sd) if remap is not None else sd)
    own = module.state_dict()
    # batch-norm step counters carry no weights: older checkpoints lack them, newer ones have them
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    sd.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked")})
    try:
        check_state_dict(module, sd, source)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; this metric expects {expected}") from None
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    return module.eval()
