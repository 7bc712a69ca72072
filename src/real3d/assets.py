"""Where the user's own weight files live (the neural backend needs them; nothing is ever downloaded).

Each asset is looked up, in order: an explicit argument (CLI flag), an environment variable, then the
user config file `~/.config/real3d/config.toml` (or $REAL3D_CONFIG), e.g.

    checkpoints = "/data/real3d/checkpoints/240210_real3dportrait_orig"
    bfm = "/data/real3d/deep_3drecon/BFM"
    hubert = "/data/hf/hubert-large-ls960-ft"
    segmenter_model = "/data/mediapipe/selfie_multiclass_256x256.tflite"
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import tomllib

from real3d.errors import DependencyError

WHERE = {
    "checkpoints": (
        "REAL3D_CHECKPOINTS",
        "the official Real3D-Portrait release (checkpoints/240210_real3dportrait_orig with audio2secc_vae/ and "
        "secc2plane_torso_orig/, linked from its README), or a folder made by `real3d convert-official`",
    ),
    "bfm": (
        "REAL3D_BFM",
        "the BFM 2009 files of the official release (deep_3drecon/BFM: BFM_model_front.mat or 01_MorphableModel.mat + "
        "Exp_Pca.bin + BFM_front_idx.mat + BFM_exp_idx.mat + facemodel_info.mat, and index_mp468_from_mesh35709.npy)",
    ),
    "hubert": (
        "REAL3D_HUBERT",
        "a local snapshot of facebook/hubert-large-ls960-ft (config.json + model.safetensors or pytorch_model.bin)",
    ),
    "segmenter_model": (
        "REAL3D_SEGMENTER",
        "MediaPipe's selfie_multiclass_256x256.tflite (optional; without it the six classes are approximated)",
    ),
}


def config_file() -> Path:
    """The user config file path ($REAL3D_CONFIG or ~/.config/real3d/config.toml)."""
    return Path(os.environ.get("REAL3D_CONFIG", Path.home() / ".config" / "real3d" / "config.toml"))


def _from_config(name: str) -> str | None:
    p = config_file()
    if not p.is_file():
        return None
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DependencyError(f"cannot read the config file {p}: {e}; fix or remove it") from e
    v = data.get(name)
    return str(v) if v is not None else None


def resolve(name: str, explicit: str | Path | None = None, required: bool = True) -> Path | None:
    """The path of asset `name` (see WHERE), or None when optional and not configured."""
    env, what = WHERE[name]
    value = explicit if explicit is not None else os.environ.get(env) or _from_config(name)
    if value is None:
        if not required:
            return None
        flag = "--" + name.replace("_", "-")
        raise DependencyError(
            f'the neural backend needs {name}: pass {flag} PATH, set ${env}, or add `{name} = "PATH"` to '
            f"{config_file()}. It is {what}."
        )
    p = Path(value).expanduser()
    if not p.exists():
        raise DependencyError(f"{name} path {p} does not exist. Expected {what}.")
    return p


@dataclass(frozen=True)
class NeuralAssets:
    """Resolved asset paths for one neural-backend run."""

    checkpoints: Path
    bfm: Path
    hubert: Path | None
    segmenter_model: Path | None

    @classmethod
    def locate(
        cls, checkpoints=None, bfm=None, hubert=None, segmenter_model=None, need_hubert: bool = True
    ) -> NeuralAssets:
        return cls(
            checkpoints=resolve("checkpoints", checkpoints),
            bfm=resolve("bfm", bfm),
            hubert=resolve("hubert", hubert, required=need_hubert),
            segmenter_model=resolve("segmenter_model", segmenter_model, required=False),
        )


def add_asset_arguments(group: argparse._ActionsContainer, device_default: str | None) -> None:
    """The command-line flags naming the user's weights and the torch device (`real3d animate`, `serve`, `batch`)."""
    group.add_argument("--checkpoints", help="official (or converted) checkpoints folder [$REAL3D_CHECKPOINTS]")
    group.add_argument("--bfm", help="BFM 2009 folder (deep_3drecon/BFM of the release) [$REAL3D_BFM]")
    group.add_argument("--hubert", help="local facebook/hubert-large-ls960-ft snapshot [$REAL3D_HUBERT]")
    group.add_argument("--segmenter-model", dest="segmenter_model", help="selfie_multiclass_256x256.tflite (optional)")
    group.add_argument("--device", default=device_default, help="torch device for the neural backend, e.g. cuda")
