"""Training checkpoints: weights and optimizer state in safetensors, everything else in JSON. No pickle.

<out>/checkpoints/step_<N>/
  generator/{model.safetensors,config.json}   the inference format (`real3d animate --torso-ckpt`)
  generator_ema/                              the EMA of the generator (when the run keeps one)
  discriminator.safetensors                   (when the run has one)
  optimizer.safetensors + optimizer.json      per optimizer: per-parameter state tensors; param_groups
  rng-rank<r>.json                            every rank's torch / numpy / python RNG states
  trainer.json                                step, epoch, batches done in the epoch, world size,
                                              the resolved config
<out>/checkpoints/latest                      name of the newest complete checkpoint
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from real3d.errors import CheckpointError
from real3d.weights.io import save_pretrained

log = logging.getLogger(__name__)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as JSON data."""
    np_state = np.random.get_state()
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ---------------------------------------------------------------------------------------------- optimizer
def optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of an optimizer's state_dict: tensors keyed `<name>.<param index>.<field>`."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    name: str,
    opt: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = name + "."
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[field] = v
    for key, v in meta["scalars"].items():
        idx, field = key.split(".", 1)
        state.setdefault(int(idx), {})[field] = v
    groups = meta["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
        len(a["params"]) != len(b["params"]) for a, b in zip(groups, opt.param_groups)
    ):
        raise CheckpointError(
            f"the checkpoint's {name} optimizer has different parameter groups than this run; "
            "resume with the same stage and `trainable` setting, or start a new run folder"
        )
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    root: Path,
    step: int,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    trainer: dict[str, Any],
    rng_states: list[dict],
    keep: int = 2,
    ema: torch.nn.Module | None = None,
) -> Path:
    """Write step_<N> (rank 0 only; `rng_states` holds every rank's state) and update `latest`."""
    ckdir = root / "checkpoints"
    final = ckdir / f"step_{step:08d}"
    tmp = ckdir / f".step_{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_pretrained(generator, generator.config, tmp / "generator")
    if ema is not None:
        save_pretrained(ema, ema.config, tmp / "generator_ema")
    if discriminator is not None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in discriminator.state_dict().items()},
            str(tmp / "discriminator.safetensors"),
        )
    tensors, meta = {}, {}
    for name, opt in optimizers.items():
        t, m = optimizer_tensors(name, opt)
        tensors.update(t)
        meta[name] = m
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    _atomic_json(tmp / "optimizer.json", meta)
    for r, st in enumerate(rng_states):
        _atomic_json(tmp / f"rng-rank{r}.json", st)
    _atomic_json(tmp / "trainer.json", trainer)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _atomic_json(ckdir / "latest.json", {"name": final.name, "step": step})
    old = sorted(p for p in ckdir.glob("step_*") if p.is_dir())
    for p in old[: max(0, len(old) - keep)]:
        shutil.rmtree(p, ignore_errors=True)
    log.info("checkpoint %s", final)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    marker = root / "checkpoints" / "latest.json"
    if not marker.is_file():
        return None
    path = root / "checkpoints" / json.loads(marker.read_text())["name"]
    return path if (path / "trainer.json").is_file() else None


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{source} does not match this run's {type(module).__name__} ({str(e)[:300]}); resume "
            "with the same model sizes, or start a new run folder"
        ) from None


def load_checkpoint(
    path: Path,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    rank: int,
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore weights, optimizers, this rank's RNG and (when given) the generator's EMA; returns trainer.json."""
    _load_strict(
        generator,
        load_file(str(path / "generator" / "model.safetensors")),
        str(path / "generator"),
    )
    if ema is not None:
        epath = path / "generator_ema" / "model.safetensors"
        if epath.is_file():
            _load_strict(ema, load_file(str(epath)), str(epath.parent))
        else:
            log.warning("%s has no generator EMA: the average restarts from the current weights", path)
            ema.load_state_dict(generator.state_dict())
    if discriminator is not None:
        dpath = path / "discriminator.safetensors"
        if not dpath.is_file():
            raise CheckpointError(f"{path} has no discriminator; resume with discriminator=none or a new run folder")
        _load_strict(discriminator, load_file(str(dpath)), str(dpath))
    tensors = load_file(str(path / "optimizer.safetensors"))
    meta = json.loads((path / "optimizer.json").read_text())
    for name, opt in optimizers.items():
        if name not in meta:
            raise CheckpointError(f"{path} has no state of the {name} optimizer")
        load_optimizer(name, opt, tensors, meta[name])
    trainer = json.loads((path / "trainer.json").read_text())
    rng = path / f"rng-rank{rank}.json"
    if rng.is_file():
        set_rng_state(json.loads(rng.read_text()))
    else:
        log.warning(
            "%s has no RNG state of rank %d (different world size): this rank's randomness restarts",
            path,
            rank,
        )
    return trainer
