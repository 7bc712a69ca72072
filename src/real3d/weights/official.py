"""Reading official Real3D-Portrait checkpoints safely.

An official checkpoint is a directory with `config.yaml` and one or more `model_ckpt_steps_<N>.ckpt`
files (legacy, non-zip `torch.save` pickles of `{'state_dict': {'model': ..., ...}, ...}`), or one such
`.ckpt` file. Pickles can run arbitrary code when loaded, so every file goes through
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers; anything else is
refused with a `CheckpointError`. The config goes through `yaml.safe_load`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from real3d.errors import CheckpointError
from real3d.state_dict import load_pickle_weights_only

log = logging.getLogger(__name__)

_STEP_RX = re.compile(r"model_ckpt_steps_(\d+)\.ckpt")


@dataclass
class OfficialCheckpoint:
    """The model weights and resolved hyper-parameters of one official checkpoint."""

    state_dict: dict[str, torch.Tensor]
    """Tensors of `state_dict['model']`, official key names."""
    hparams: dict[str, Any] | None
    """`config.yaml` next to the checkpoint (None when there is none)."""
    path: Path
    """The `.ckpt` file that was read."""
    global_step: int | None = None
    """Training step stored in the checkpoint, when present."""
    other_entries: list[str] = field(default_factory=list)
    """Names of the other `state_dict` entries (discriminator, syncnet, ...), which are ignored."""


def resolve_checkpoint_file(path: str | Path) -> Path:
    """A `.ckpt` file itself, or in a directory the `model_ckpt_steps_<N>.ckpt` with the highest N."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an official checkpoint directory or .ckpt file")
    steps = [(int(m.group(1)), p) for p in path.iterdir() if (m := _STEP_RX.fullmatch(p.name)) and p.is_file()]
    if not steps:
        others = sorted(p.name for p in path.glob("*.ckpt"))
        hint = f" (found {', '.join(others)}; pass one of them directly)" if others else ""
        raise CheckpointError(
            f"no model_ckpt_steps_<N>.ckpt in {path}{hint}; pass the official checkpoint directory "
            "(config.yaml + model_ckpt_steps_<N>.ckpt) or a .ckpt file"
        )
    return max(steps)[1]


def extract_model_state_dict(
    ckpt: Any, path: Path, model_name: str = "model"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`ckpt['state_dict'][model_name]`, or the `model_name.`-prefixed keys of a flat state dict.
    Returns the tensors and the names of the ignored entries."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} has no 'state_dict' entry; it is not an official Real3D-Portrait training checkpoint"
        )
    sd = ckpt["state_dict"]
    prefix = model_name + "."
    if any("." in str(k) for k in sd):  # flat layout: {'model.vae.x': tensor, 'disc.y': tensor}
        out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        others = sorted({str(k).split(".")[0] for k in sd if not str(k).startswith(prefix)})
    else:
        sub = sd.get(model_name)
        if not isinstance(sub, dict):
            raise CheckpointError(
                f"{path} has no state_dict['{model_name}'] (entries: {', '.join(map(str, sd)) or 'none'})"
            )
        out = dict(sub)
        others = sorted(str(k) for k in sd if k != model_name)
    if not out:
        raise CheckpointError(f"{path} holds no '{model_name}' weights")
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: these '{model_name}' entries are not tensors: {', '.join(bad[:10])}")
    return out, others


def read_config_yaml(path: Path) -> dict[str, Any]:
    """`yaml.safe_load` of an official config.yaml (no custom tags, no code)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"cannot parse {path} as plain YAML ({err}); use the config.yaml of the release"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a mapping of hyper-parameters")
    return data


def load_official_checkpoint(path: str | Path, model_name: str = "model") -> OfficialCheckpoint:
    """Read an official checkpoint directory (or `.ckpt` file) without executing pickled code."""
    ckpt_file = resolve_checkpoint_file(path)
    ckpt = load_pickle_weights_only(ckpt_file)
    state_dict, others = extract_model_state_dict(ckpt, ckpt_file, model_name)
    config_file = ckpt_file.parent / "config.yaml"
    hparams = read_config_yaml(config_file) if config_file.is_file() else None
    if hparams is None:
        log.warning("no config.yaml next to %s; model sizes are read from the tensor shapes only", ckpt_file)
    step = ckpt.get("global_step")
    log.info("read %d tensors from %s (ignored entries: %s)", len(state_dict), ckpt_file, others or "none")
    return OfficialCheckpoint(
        state_dict=state_dict,
        hparams=hparams,
        path=ckpt_file,
        global_step=step if isinstance(step, int) else None,
        other_entries=others,
    )
