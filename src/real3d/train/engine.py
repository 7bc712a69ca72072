"""The training loop shared by every stage: data, distribution, optimizers, schedules, checkpoints, logs.

Distribution is PyTorch's own: launched by `torchrun` (one process per GPU/CPU slot, any number of nodes;
`WORLD_SIZE`/`RANK`/`LOCAL_RANK` from the environment), `torch.distributed` with NCCL on GPUs and gloo on
CPU, a `DistributedSampler` so that every rank sees different pairs, the weights broadcast from rank 0 at
start, and the gradients averaged over the ranks after each backward (the averaging DDP does; done
explicitly because one step runs several differently shaped forwards - target and src->src renders,
regularisers, the discriminator with R1 - which DDP's per-forward hooks would only partly cover), so the
replicas stay identical. A single process needs no launcher.

Per step: the stage's generator loss -> backward -> all-reduce -> clip (1.0) -> Adam step with the per-group
learning rates of the stage's schedule; then, once the discriminator is on, its loss (+ lazy R1) the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from real3d.config.real3d_portrait import Real3DPortraitConfig
from real3d.errors import CheckpointError, InputError
from real3d.eval.metrics import l1, psnr, ssim
from real3d.models.discriminator import DiscriminatorConfig, DualDiscriminator
from real3d.models.real3d_portrait import Real3DPortrait
from real3d.train import checkpoint as ckpt
from real3d.train.config import TrainConfig, to_dict
from real3d.train.data import PairDataset, ResumableSampler, ValidationPairs
from real3d.train.ema import GeneratorEMA
from real3d.train.export import checkpoint_generator, export_generator
from real3d.train.perceptual import build_perceptual
from real3d.train.records import RecordIndex
from real3d.train.stages.base import FaceKit
from real3d.train.stages.stage2 import Stage2
from real3d.train.stages.stage3 import Stage3
from real3d.weights.convert import load_official_model
from real3d.weights.io import from_pretrained
from real3d.weights.official_sizes import with_released_hyperparameters

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    """What a `train` call did."""

    step: int
    """Optimizer steps done (including those of a resumed run)."""
    out: Path
    """The run folder."""
    checkpoint: Path | None
    """The last checkpoint written."""
    export: Path | None
    """The exported generator (inference format), rank 0."""
    last_logs: dict[str, float] = field(default_factory=dict)
    """Scalars of the last step."""
    validation: list[dict[str, float]] = field(default_factory=list)
    """Every validation of this call (step, l1, psnr, baseline_l1, baseline_psnr)."""


def setup_distributed(cfg: TrainConfig) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device(f"cuda:{local}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 matmuls/convs run natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(c()) for c in checks if c is not None)


# ----------------------------------------------------------------------------------------------- building
def load_init(path: str | Path) -> torch.nn.Module:
    """Generator weights to start from: our folder (model.safetensors + config.json), a run or checkpoint
    folder of ours (its newest generator: the EMA when the run kept one), or an official checkpoint folder /
    .ckpt (read safely)."""

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"--init-from {p} does not exist")
    latest = ckpt.latest_checkpoint(p)
    if latest is not None:  # a run folder: its newest checkpoint
        return from_pretrained(checkpoint_generator(latest))
    if (p / "generator" / "config.json").is_file():  # a checkpoint folder
        return from_pretrained(checkpoint_generator(p))
    if (p / "config.json").is_file() and "model_type" in json.loads((p / "config.json").read_text()):
        return from_pretrained(p)
    model, _, _ = load_official_model(p)
    return model


def build_generator(cfg: TrainConfig) -> torch.nn.Module:

    if cfg.init_from:
        model = load_init(cfg.init_from)
        if not isinstance(model, Real3DPortrait):
            raise CheckpointError(
                f"--init-from {cfg.init_from} holds a {type(model).__name__}, not the torso generator "
                "(secc2plane_torso / real3d_portrait)"
            )
        return model
    if cfg.stage == "stage3":
        log.warning(
            "stage 3 starts from random I2P / motion adapter / decoder weights: pass --init-from a stage-2 "
            "run (or the release) unless this is a test"
        )
    torch.manual_seed(cfg.seed)
    config = tiny_generator_config() if cfg.model == "tiny" else Real3DPortraitConfig.official()
    return Real3DPortrait(config)


def tiny_generator_config():
    """`Real3DPortraitConfig.tiny()` with MiT widths that split into the released head counts and the released
    values of what official checkpoints do not record, so a tiny run also exports to the official layout."""

    base = Real3DPortraitConfig.tiny()
    ma = dataclasses.replace(base.motion_adapter, embed_dims=(4, 8, 20, 32))
    return with_released_hyperparameters(dataclasses.replace(base, motion_adapter=ma))


def build_stage(cfg: TrainConfig, device: torch.device, dry_run: bool = False):
    """(stage, generator, discriminator) on `device` (a dry run needs no BFM)."""

    if not cfg.bfm and not dry_run:
        raise InputError("training needs the BFM folder: pass bfm=PATH (or --bfm); it renders the PNCC maps")
    generator = build_generator(cfg).to(device).train()
    size = generator.config.image_resolution
    disc = None
    if cfg.discriminator != "none":
        dcfg = (
            DiscriminatorConfig.tiny(size)
            if cfg.discriminator == "tiny"
            else dataclasses.replace(DiscriminatorConfig.official(), img_resolution=size)
        )
        torch.manual_seed(cfg.seed + 1)
        disc = DualDiscriminator(dcfg).to(device).train()
    w = cfg.losses
    perceptual = build_perceptual(w.vgg19, w.vgg_face, w.perceptual_official_sizes)
    if perceptual is not None:
        perceptual = perceptual.to(device)
    kit = FaceKit(cfg.bfm, size) if cfg.bfm else None
    cls = {"stage2": Stage2, "stage3": Stage3}[cfg.stage]
    return cls(cfg, generator, disc, perceptual, kit), generator, disc


def describe(cfg: TrainConfig, stage) -> str:
    """The resolved config and the parameter groups (for --dry-run)."""
    lines = [
        "# resolved config",
        json.dumps(to_dict(cfg), indent=1),
        "# parameter groups (lr at steps 0 / warmup / 50k)",
    ]
    for name, params in stage.groups().items():
        n = sum(p.numel() for p in params)
        lrs = [stage.lr(name, s) for s in (0, cfg.optim.warmup, 50_000)]
        lines.append(f"{name:16s} {len(params):5d} tensors {n:12,d} params  lr " + " / ".join(f"{x:.3g}" for x in lrs))
    frozen = sum(p.numel() for p in stage.generator.parameters() if not p.requires_grad)
    lines.append(f"{'frozen':16s} {frozen:26,d} params")
    if stage.discriminator is not None:
        n = sum(p.numel() for p in stage.discriminator.parameters())
        lines.append(
            f"{'discriminator':16s} {n:26,d} params  lr {stage.d_lr(cfg.optim.warmup):.3g}, "
            f"from step {cfg.schedule.d_start}; adversarial from {cfg.schedule.start_adv}"
        )
    lines.append(f"perceptual loss: {'on' if stage.perceptual is not None else 'off (no VGG weight files given)'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- helpers
def _params_with_grad(params) -> list[torch.nn.Parameter]:
    return [p for p in params if p.grad is not None]


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce (mean) the gradients of `params` in one flat buffer. Parameters without a gradient on this
    rank get zeros so every rank reduces the same buffer."""
    if world <= 1 or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def broadcast_module(module: torch.nn.Module | None, world: int, buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers (or only buffers: batch-norm statistics, as DDP's broadcast_buffers)."""
    if module is None or world <= 1:
        return
    tensors = list(module.buffers()) if buffers_only else list(module.parameters()) + list(module.buffers())
    for t in tensors:
        dist.broadcast(t.data, src=0)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of the module's state dict (names and bytes): equal on every rank when the replicas agree."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RunLogger:
    """JSONL per rank (`logs/train-rank<r>.jsonl`) and TensorBoard on rank 0 when `tensorboard` is installed."""

    def __init__(self, out: Path, rank: int) -> None:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.file = open(out / "logs" / f"train-rank{rank}.jsonl", "a")  # noqa: SIM115 (closed in close())
        self.tb = None
        if rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                log.info("tensorboard is not installed: logs go to %s only", out / "logs")

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def images(self, step: int, images: dict[str, torch.Tensor]) -> None:
        if self.tb is None:
            return
        for k, v in images.items():
            x = v[:4].detach().float().cpu()
            x = x if k == "opacity" else (x + 1) / 2
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            self.tb.add_images(f"samples/{k}", x.clamp(0, 1), step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def validate(
    stage, loader: DataLoader, max_batches: int, strip: Path | None = None, strip_clips: tuple[str, ...] = ()
) -> dict[str, float]:
    """L1 / PSNR / SSIM (real3d.eval.metrics, uint8 images) of the predictions and of the frozen-source baseline
    (the source frame itself) against the held-out targets; optionally a PNG strip source | target | prediction
    of up to 8 pairs spread over the clips (over `strip_clips` only when given).

    Keys: `l1`, `psnr`, `ssim` and `baseline_*` of the same over every pair, and the same with the prefix `frames/`
    (held-out frames of the training clips: same identity) and `clips/` (clips held out entirely, `val_clips`:
    unseen identities) when that subset has pairs, and `clip/<name>/` per clip held out entirely or shown in the
    strip."""
    from PIL import Image

    gen = stage.generator
    was = gen.training
    gen.eval()
    names = ("l1", "psnr", "ssim", "baseline_l1", "baseline_psnr", "baseline_ssim")
    rows_of: dict[str, list[float]] = {k: [] for k in names}
    unseen: list[bool] = []
    clip_of: list[str] = []
    rows = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        pred, target, source = stage.predict(batch)
        p, t, s = _to_uint8(pred), _to_uint8(target), _to_uint8(source)
        flags = batch["unseen"].tolist() if "unseen" in batch else [False] * len(p)
        clip_of += [loader.dataset.clip_name(int(j)) for j in batch["index"][:, 0]]
        for a, b, c, u in zip(p, t, s, flags):
            rows_of["l1"].append(l1(a, b))
            rows_of["psnr"].append(min(psnr(a, b), 100.0))
            rows_of["ssim"].append(ssim(a, b))
            rows_of["baseline_l1"].append(l1(c, b))
            rows_of["baseline_psnr"].append(min(psnr(c, b), 100.0))
            rows_of["baseline_ssim"].append(ssim(c, b))
            unseen.append(bool(u))
            rows.append(np.concatenate([c, b, a], 1))
    if was:
        stage.train_mode()
    shown = [i for i, c in enumerate(clip_of) if c in strip_clips] if strip_clips else list(range(len(rows)))
    if strip is not None and shown:
        strip.parent.mkdir(parents=True, exist_ok=True)
        pick = np.unique(np.linspace(0, len(shown) - 1, min(8, len(shown))).round().astype(int))  # spread over clips
        Image.fromarray(np.concatenate([rows[shown[i]] for i in pick], 0)).save(strip)
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in rows_of.items()}
    mask = np.array(unseen, bool)
    clip_arr = np.array(clip_of)
    subsets = [("frames/", ~mask), ("clips/", mask)]
    per_clip = dict.fromkeys(c for c, u in zip(clip_of, unseen) if u or c in strip_clips)
    subsets += [(f"clip/{c}/", clip_arr == c) for c in per_clip]
    for prefix, keep in subsets:
        if keep.any():
            out.update({prefix + k: float(np.mean(np.array(v)[keep])) for k, v in rows_of.items()})
    return out


def _val_summary(v: dict[str, float], pre: str = "") -> str:
    """One line per subset: L1 / PSNR of the prediction and of the frozen source."""
    parts = []
    subsets = [("", "all"), ("frames/", "held-out frames"), ("clips/", "held-out clips")]
    subsets += [
        (k[len(pre) : -2], k[len(pre) + 5 : -3]) for k in v if k.startswith(pre + "clip/") and k.endswith("/l1")
    ]
    for sub, name in subsets:
        prefix = pre + sub
        if prefix + "l1" in v:
            parts.append(
                f"{name}: L1 {v[prefix + 'l1']:.4f} PSNR {v[prefix + 'psnr']:.2f} dB SSIM {v[prefix + 'ssim']:.3f} "
                f"(frozen source: L1 {v[prefix + 'baseline_l1']:.4f} PSNR {v[prefix + 'baseline_psnr']:.2f} dB "
                f"SSIM {v[prefix + 'baseline_ssim']:.3f})"
            )
    return "; ".join(parts)


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, dry_run: bool = False, stop_after: int | None = None) -> TrainResult | str:
    """Run (or resume) the training of `cfg`. `dry_run` returns the description instead. `stop_after` ends this
    call after that many steps of it (a checkpoint is written), as a kill would (for tests and benchmarks)."""
    with _threads(cfg.threads):
        return _train(cfg, dry_run, stop_after)


def _train(cfg: TrainConfig, dry_run: bool, stop_after: int | None) -> TrainResult | str:

    d = setup_distributed(cfg)
    if cfg.precision == "bf16" and not bf16_native(d.device):
        log.warning("bf16 requested but %s has no native bf16: training in fp32", d.device)
        cfg = dataclasses.replace(cfg, precision="fp32")
    stage, gen, disc = build_stage(cfg, d.device, dry_run)
    groups = stage.groups()
    if dry_run:
        return describe(cfg, stage)
    if not groups:
        raise InputError(f"nothing to train: trainable={cfg.trainable} selects no parameters of {cfg.stage}")
    out = Path(cfg.out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    broadcast_module(gen, d.world)
    broadcast_module(disc, d.world)
    if d.world > 1:
        stage.all_mean = lambda x: _all_mean(x, d)

    o = cfg.optim
    opt_g = torch.optim.Adam(
        [{"params": ps, "name": n, "lr": 0.0} for n, ps in groups.items()],
        lr=0.0,
        betas=o.betas,
    )
    optimizers: dict[str, torch.optim.Optimizer] = {"generator": opt_g}
    if disc is not None:
        c = o.r1_every / (o.r1_every + 1) if o.r1_every > 0 else 1.0
        optimizers["discriminator"] = torch.optim.Adam(
            disc.parameters(), lr=0.0, betas=(o.betas[0] ** c, o.betas[1] ** c)
        )
    torch.manual_seed(cfg.seed + d.rank)
    np.random.seed(cfg.seed + d.rank)
    import random as _random

    _random.seed(cfg.seed + d.rank)

    ema = GeneratorEMA(gen, cfg.ema) if cfg.ema > 0 and d.main else None  # rank 0: the replicas are identical
    step, epoch, batch_in_epoch = 0, 0, 0
    resume_from = ckpt.latest_checkpoint(out)
    if resume_from is not None:
        trainer = ckpt.load_checkpoint(
            resume_from, gen, disc, optimizers, d.rank, ema=ema.module if ema is not None else None
        )
        if trainer["world_size"] != d.world:
            log.warning(
                "resuming a %d-rank run on %d ranks: the data order changes",
                trainer["world_size"],
                d.world,
            )
        step, epoch, batch_in_epoch = (
            trainer["step"],
            trainer["epoch"],
            trainer["batch_in_epoch"],
        )
        if trainer["world_size"] != d.world or trainer.get("batch_size") != cfg.batch_size:
            batch_in_epoch = 0
        log.info("resumed %s at step %d", resume_from, step)

    index = RecordIndex(cfg.data.records)
    size = gen.config.image_resolution
    dataset = PairDataset(index, cfg.data, size)
    sampler = ResumableSampler(dataset, d.world, d.rank, cfg.data.seed, cfg.batch_size)
    if sampler.batches_per_epoch() == 0:
        raise InputError(
            f"{len(dataset)} training pairs cannot fill one batch of {cfg.batch_size} on each of "
            f"{d.world} ranks; lower batch_size or add clips"
        )
    loader_gen = torch.Generator().manual_seed(cfg.data.seed)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=_collate,
        drop_last=True,
        generator=loader_gen,
        persistent_workers=False,
    )
    val_set = ValidationPairs(index, cfg.data, size)
    val_loader = DataLoader(
        val_set,
        batch_size=min(cfg.batch_size, max(1, len(val_set))),
        collate_fn=_collate,
    )

    logger = RunLogger(out, d.rank)
    if d.main:
        (out / "config.json").write_text(json.dumps({"train_config": to_dict(cfg)}, indent=1))
    result = TrainResult(step, out, resume_from, None)
    t_start = time.perf_counter()
    t_log, n_log = time.perf_counter(), 0
    steps_this_call = 0
    trainable_g = [p for ps in groups.values() for p in ps]
    stop = False

    def save() -> Path | None:
        states = _gather_rng(d)
        path = None
        if d.main:
            trainer = {
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "world_size": d.world,
                "batch_size": cfg.batch_size,
                "stage": cfg.stage,
                "train_config": to_dict(cfg),
            }
            path = ckpt.save_checkpoint(
                out,
                step,
                gen,
                disc,
                optimizers,
                trainer,
                states,
                cfg.keep_ckpts,
                ema=ema.module if ema is not None else None,
            )
        if d.world > 1:
            dist.barrier()
        return path

    try:
        while step < cfg.max_steps and not stop:
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)
            sampler.start_batch = batch_in_epoch
            for batch in loader:
                for g in opt_g.param_groups:
                    g["lr"] = stage.lr(g["name"], step)
                out_g = stage.generator_loss(batch, step)
                opt_g.zero_grad(set_to_none=True)
                out_g.loss.backward()
                average_gradients(trainable_g, d.world)
                gnorm = torch.nn.utils.clip_grad_norm_(trainable_g, o.grad_clip)
                opt_g.step()
                logs = dict(out_g.logs)
                logs["grad_norm"] = float(gnorm)
                if disc is not None and stage.d_active(step) and out_g.fake is not None:
                    opt_d = optimizers["discriminator"]
                    for g in opt_d.param_groups:
                        g["lr"] = stage.d_lr(step)
                    d_loss, d_logs = stage.discriminator_loss(batch, out_g.fake, step)
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    d_params = list(disc.parameters())
                    average_gradients(d_params, d.world)
                    torch.nn.utils.clip_grad_norm_(d_params, o.grad_clip)
                    opt_d.step()
                    logs.update(d_logs)
                broadcast_module(gen, d.world, buffers_only=True)
                broadcast_module(disc, d.world, buffers_only=True)
                if ema is not None:
                    ema.update(gen, step)
                step += 1
                batch_in_epoch += 1
                steps_this_call += 1
                n_log += len(batch["index"])
                result.last_logs = logs
                if step % cfg.log_every == 0 or step == 1:
                    dt = time.perf_counter() - t_log
                    logs_out = {
                        **logs,
                        "samples_per_s": n_log * d.world / max(dt, 1e-9),
                        **{f"lr/{g['name']}": g["lr"] for g in opt_g.param_groups},
                        "seen": batch["index"][:, 0].tolist(),
                    }
                    logger.scalars(step, logs_out)
                    t_log, n_log = time.perf_counter(), 0
                    if d.main:
                        log.info(
                            "step %d  loss %.4f  %s",
                            step,
                            logs["g_loss"],
                            f"{logs_out['samples_per_s']:.2f} samples/s",
                        )
                else:
                    logger.scalars(
                        step,
                        {
                            "g_loss": logs["g_loss"],
                            "seen": batch["index"][:, 0].tolist(),
                        },
                    )
                if d.main and cfg.sample_every and step % cfg.sample_every == 0:
                    logger.images(step, out_g.images)
                if cfg.val_every and step % cfg.val_every == 0 and len(val_set):
                    if d.main:
                        v = validate(
                            stage,
                            val_loader,
                            cfg.val_batches,
                            out / "samples" / f"val_{step:08d}.png",
                            cfg.data.strip_clips,
                        )
                        if ema is not None:
                            live, stage.generator = stage.generator, ema.module
                            try:
                                ve = validate(
                                    stage,
                                    val_loader,
                                    cfg.val_batches,
                                    out / "samples" / f"val_{step:08d}_ema.png",
                                    cfg.data.strip_clips,
                                )
                            finally:
                                stage.generator = live
                            v.update({f"ema/{k}": x for k, x in ve.items()})
                        logger.scalars(step, {f"val/{k}": x for k, x in v.items()})
                        result.validation.append({"step": step, **v})
                        log.info("step %d validation: %s", step, _val_summary(v))
                        if ema is not None:
                            log.info("step %d validation of the EMA: %s", step, _val_summary(v, "ema/"))
                    if d.world > 1:
                        dist.barrier()
                elapsed = (time.perf_counter() - t_start) / 60
                stop = (
                    step >= cfg.max_steps
                    or (stop_after is not None and steps_this_call >= stop_after)
                    or (cfg.max_minutes is not None and elapsed >= cfg.max_minutes)
                )
                if d.world > 1:
                    flag = torch.tensor([1.0 if stop else 0.0])
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop = bool(flag.item())
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 and not stop:
                    result.checkpoint = save()
                if stop:
                    break
            else:
                epoch += 1
                batch_in_epoch = 0
        result.checkpoint = save()
        result.step = step
        digest = {
            "step": step,
            "generator_sha256": weights_digest(gen),
            "discriminator_sha256": weights_digest(disc) if disc is not None else None,
        }
        (out / "logs" / f"final-rank{d.rank}.json").write_text(json.dumps(digest))
        if d.main and step >= cfg.max_steps:
            result.export = export_generator(ema.module if ema is not None else gen, out / "export" / "generator")
    finally:
        logger.close()
        index.close()
    return result


def _all_mean(x: float, d: Dist) -> float:
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def _gather_rng(d: Dist) -> list[dict[str, Any]]:
    state = ckpt.rng_state()
    if d.world <= 1:
        return [state]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, state)  # JSON-like data of every rank (sent by pickle between our own ranks)
    return out
