"""Official Real3D-Portrait checkpoint -> real3d checkpoint (`real3d convert-official SRC OUT`).

Each official model kind is an `OfficialKind` in `OFFICIAL_KINDS`: how to recognise it from its state
dict / config.yaml, and how to build our module from it (key remap + config + strict load): the A2M
model (`audio2secc_vae` -> `Audio2Motion`) and the torso model (`secc2plane_torso` -> `Real3DPortrait`).
Both read their sizes from the tensor shapes, so official-format checkpoints of any size load.

`save_official_format` goes the other way (our module -> an official-format directory), for tests
and for tools that read the official layout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from real3d.errors import CheckpointError, report_errors
from real3d.models import audio2motion, real3d_portrait
from real3d.models.audio2motion import Audio2Motion, config_from_official
from real3d.models.real3d_portrait import Real3DPortrait
from real3d.state_dict import instantiate_with_weights
from real3d.weights.io import CONFIG_NAME, from_pretrained, model_type_of, save_pretrained
from real3d.weights.official import OfficialCheckpoint, load_official_checkpoint
from real3d.weights.official_sizes import (
    official_torso_hparams,
    torso_config_from_official,
    unrecorded_differences,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfficialKind:
    """One kind of official checkpoint and how to turn it into our module."""

    name: str
    """The official name of the released checkpoint."""
    detect: Callable[[Mapping[str, torch.Tensor], Mapping[str, Any] | None], bool]
    """(state_dict, hparams) -> whether a checkpoint is of this kind."""
    build: Callable[[OfficialCheckpoint], tuple[nn.Module, Any]]
    """Official checkpoint -> (our module with its weights loaded, in eval mode; its config)."""


def _detect_a2m(sd: Mapping[str, torch.Tensor], hparams: Mapping[str, Any] | None) -> bool:
    return "vae.prior_flow.flows.0.pre.weight" in sd and "mel_encoder.0.weight" in sd


def _build_a2m(ckpt: OfficialCheckpoint) -> tuple[nn.Module, Any]:
    sd = audio2motion.remap_official_state_dict(ckpt.state_dict)
    config = config_from_official(sd, ckpt.hparams)
    return instantiate_with_weights(Audio2Motion, config, sd, str(ckpt.path)), config


def _detect_torso(sd: Mapping[str, torch.Tensor], hparams: Mapping[str, Any] | None) -> bool:
    return any(k.startswith("cano_img2plane_backbone.") for k in sd) and any(
        k.startswith("superresolution.") for k in sd
    )


def _build_torso(ckpt: OfficialCheckpoint) -> tuple[nn.Module, Any]:
    sd = real3d_portrait.remap_official_state_dict(ckpt.state_dict)
    config = torso_config_from_official(sd, ckpt.hparams)
    return instantiate_with_weights(Real3DPortrait, config, sd, str(ckpt.path)), config


# Detection runs in this order; the first kind whose `detect` is true wins.
OFFICIAL_KINDS: dict[str, OfficialKind] = {
    "audio2secc_vae": OfficialKind("audio2secc_vae", _detect_a2m, _build_a2m),
    "secc2plane_torso": OfficialKind("secc2plane_torso", _detect_torso, _build_torso),
}


def detect_kind(ckpt: OfficialCheckpoint) -> OfficialKind:
    """The `OfficialKind` of a loaded official checkpoint."""
    for kind in OFFICIAL_KINDS.values():
        if kind.detect(ckpt.state_dict, ckpt.hparams):
            return kind
    sample = ", ".join(list(ckpt.state_dict)[:5])
    raise CheckpointError(
        f"{ckpt.path} is not a known official Real3D-Portrait model (first keys: {sample}); supported: "
        f"{', '.join(OFFICIAL_KINDS)}"
    )


def load_official_model(src: str | Path) -> tuple[nn.Module, Any, OfficialKind]:
    """Read an official checkpoint directory/.ckpt and build our module from it (converting on the fly)."""
    ckpt = load_official_checkpoint(src)
    kind = detect_kind(ckpt)
    model, config = kind.build(ckpt)
    return model, config, kind


def load_checkpoint(path: str | Path) -> nn.Module:
    """Our folder (config.json + model.safetensors) or an official checkpoint folder/.ckpt (converted on the
    fly), as a module in eval mode."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return from_pretrained(path).eval()
    return load_official_model(path)[0].eval()


def convert_official(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert an official checkpoint (directory or .ckpt) into `out_dir` (model.safetensors + config.json)."""
    model, config, kind = load_official_model(src_dir)
    out = save_pretrained(model, config, out_dir)
    log.info("converted %s checkpoint %s -> %s", kind.name, src_dir, out)
    return out


OFFICIAL_STEPS = {"real3d_portrait": 100000, "audio2motion": 400000}
"""global_step of the released checkpoints (the default step of `save_official_format`)."""


def official_hparams(model: nn.Module) -> dict[str, Any]:
    """The config.yaml entries of an official-format checkpoint of `model` (a `Real3DPortrait` or
    an `Audio2Motion`): the released architecture switches and the sizes config.yaml records."""

    kind = model_type_of(model)
    cfg = model.config
    if kind == "real3d_portrait":
        return official_torso_hparams(cfg)
    if kind == "audio2motion":
        return {
            "task_cls": "tasks.os_avatar.audio2motion_task.Audio2MotionTask",
            "audio_type": "hubert",
            "motion_type": "exp",
            "use_pitch": True,
            "use_flow": True,
            "hidden_size": cfg.hidden_dim,
            "use_mouth_amp_embed": cfg.use_mouth_amp_embed,
            "use_eye_amp_embed": cfg.use_eye_amp_embed,
        }
    raise CheckpointError(f"no official format for model type '{kind}'; only real3d_portrait and audio2motion have one")


def save_official_format(model: nn.Module, directory: str | Path, step: int | None = None) -> Path:
    """Write `model` as an official checkpoint directory: `config.yaml` + `model_ckpt_steps_<step>.ckpt`,
    a legacy (non-zip) torch pickle of {'epoch', 'global_step', 'state_dict': {'model': sd},
    'optimizer_states'} with the official key names (ours are the official ones). Returns the .ckpt path.

    Reading it back (`load_official_model`) rebuilds `model` exactly when its config carries the
    released values of what checkpoints do not record (`official_sizes.with_released_hyperparameters`)."""
    import yaml

    hparams = official_hparams(model)
    if model_type_of(model) == "real3d_portrait":
        diff = unrecorded_differences(model.config)
        if diff:
            raise CheckpointError(
                f"the official format cannot record {'; '.join(diff)} (readers take the released values); "
                "build the model from official_sizes.with_released_hyperparameters(config) or save it with "
                "save_pretrained"
            )
    step = OFFICIAL_STEPS[model_type_of(model)] if step is None else int(step)
    directory = Path(directory)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    ckpt = {"epoch": 0, "global_step": step, "state_dict": {"model": sd}, "optimizer_states": []}
    path = directory / f"model_ckpt_steps_{step}.ckpt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.yaml").write_text(yaml.safe_dump(hparams, sort_keys=True), encoding="utf-8")
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    except OSError as err:
        raise CheckpointError(f"cannot write the official-format checkpoint to {directory}: {err}") from None
    log.info("wrote %s (%d tensors, official format)", path, len(sd))
    return path


DESCRIPTION = (
    "Convert an official Real3D-Portrait checkpoint (directory with config.yaml + model_ckpt_steps_*.ckpt, or a "
    ".ckpt) into real3d's format (model.safetensors + config.json). The pickle is read with "
    "torch.load(weights_only=True): no code in it runs."
)


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `real3d convert-official`'s arguments to `parser` and make `run_command` its handler."""
    parser.add_argument("src", type=Path, help="official checkpoint directory or .ckpt file")
    parser.add_argument("out", type=Path, help="output directory (created; existing files are replaced)")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Handler of `real3d convert-official`: prints the output folder."""
    print(convert_official(args.src, args.out))
    return 0


def convert_main(argv: Sequence[str] | None = None) -> int:
    """`real3d convert-official SRC OUT` as a function. Returns the process exit code."""
    parser = configure(argparse.ArgumentParser(prog="real3d convert-official", description=DESCRIPTION))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return report_errors(args.func, args)
