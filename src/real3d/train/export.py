"""Export a trained generator to the inference formats.

- ours: `model.safetensors` + `config.json` (`real3d animate --backend neural --torso-ckpt DIR` loads it);
- the official layout: `config.yaml` + `model_ckpt_steps_<N>.ckpt` (`state_dict['model']`, official key
  names), for the official code or `real3d convert-official`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from real3d.errors import CheckpointError
from real3d.train.checkpoint import latest_checkpoint
from real3d.weights.convert import save_official_format
from real3d.weights.io import from_pretrained, save_pretrained


def export_generator(generator: torch.nn.Module, directory: str | Path) -> Path:
    """Write the generator in our inference format; returns the folder."""
    return save_pretrained(generator, generator.config, directory)


def export_official(generator: torch.nn.Module, directory: str | Path, step: int | None = None) -> Path:
    """Write the generator in the official checkpoint layout; returns the folder."""
    return save_official_format(generator, directory, step=step)


def checkpoint_generator(ck: Path) -> Path:
    """The generator folder a checkpoint stands for: its EMA when the run kept one, else its live weights."""
    ema = ck / "generator_ema"
    return ema if (ema / "config.json").is_file() else ck / "generator"


def export_run(run: str | Path, directory: str | Path, official: bool = False) -> Path:
    """The newest checkpoint's generator (its EMA when the run kept one) of a run folder (or a checkpoint
    folder) -> `directory`."""

    p = Path(run)
    ck = p if (p / "generator" / "config.json").is_file() else latest_checkpoint(p)
    if ck is None:
        raise CheckpointError(f"{p} holds no training checkpoint (checkpoints/latest.json); train first")
    gen = from_pretrained(checkpoint_generator(ck))
    if official:
        step = int(ck.name.split("_")[-1]) if ck.name.startswith("step_") else None
        return export_official(gen, directory, step)
    return export_generator(gen, directory)
