"""What the image stages share: PNCC/keypoint conditioning from the records' 3DMM coefficients, the
reconstruction terms, the discriminator step and the learning-rate shape.

A stage object declares its trainable parameter groups (`groups`), their learning rate at a step (`lr`),
and computes the generator and discriminator losses of a batch; the engine (`real3d.train.engine`) owns
optimizers, data, distribution, checkpoints and logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from real3d.errors import InputError
from real3d.face.bfm import BFMFiles, ParametricFace
from real3d.face.pncc import PNCCRenderer
from real3d.models.discriminator import DualDiscriminator, r1_penalty
from real3d.models.real3d_portrait import Real3DPortrait
from real3d.motion.cameras import torso_keypoints
from real3d.train import losses as L
from real3d.train.config import TrainConfig
from real3d.train.perceptual import PerceptualLoss


class FaceKit:
    """BFM face model + PNCC renderer at the generator's input size (the conditioning of every stage)."""

    def __init__(self, bfm_dir: str | Path, size: int) -> None:
        files = BFMFiles.locate(bfm_dir)
        data = files.load_front()
        self.face = ParametricFace(data, files.mp468_index(data.n_vertices))
        left, right = files.eye_faces(data)
        self.renderer = PNCCRenderer(
            data.faces,
            files.ncc_code(data),
            np.concatenate([left, right]),
            image_size=size,
            face_zero_background="never",
        )
        self.size = size

    @torch.no_grad()
    def pncc(self, ident: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        """id [B,80], exp [B,64] -> frontal PNCC [B,3,S,S] in [-1,1] (CPU)."""
        ident, exp = ident.detach().float().cpu(), exp.detach().float().cpu()
        zeros = torch.zeros(exp.shape[0], 3)
        return self.renderer(self.face.posed_vertices(ident, exp, zeros, zeros))

    @torch.no_grad()
    def keypoints(
        self,
        ident: torch.Tensor,
        exp: torch.Tensor,
        euler: torch.Tensor,
        trans: torch.Tensor,
    ) -> torch.Tensor:
        """[B,68,3] torso keypoints (lm68 of the fit in [-1,1], z = 0, official +1 quirk)."""
        f = [t.detach().float().cpu() for t in (ident, exp, euler, trans)]
        return torso_keypoints(self.face.reconstruct_lm2d_official(*f))


@dataclass
class Conditioning:
    """PNCC maps and keypoints of a batch (no gradient)."""

    cano: torch.Tensor
    """[B,3,S,S] PNCC of (id, exp 0)."""
    src: torch.Tensor
    """[B,3,S,S] PNCC of (id, source exp)."""
    tgt: torch.Tensor
    """[B,3,S,S] PNCC of (id, target exp)."""
    kp_s: torch.Tensor
    """[B,68,3] source keypoints."""
    kp_d: torch.Tensor
    """[B,68,3] target keypoints."""


@dataclass
class StepOutput:
    """A generator step: the loss to back-propagate, scalars to log, what the discriminator needs, samples."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)
    fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    """(image, image_raw, camera) of the prediction, detached."""
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    """[B,C,H,W] in [-1,1] (opacity in [0,1]) for sample logs."""


def warmup_factor(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


class ImageStage(nn.Module):
    """Common machinery of stages 2 and 3 (`Stage2`, `Stage3`)."""

    name = "image"

    def __init__(
        self,
        cfg: TrainConfig,
        generator: Real3DPortrait,
        discriminator: DualDiscriminator | None,
        perceptual: PerceptualLoss | None,
        kit: FaceKit,
    ) -> None:
        super().__init__()
        self.config = cfg
        self.generator = generator
        self.discriminator = discriminator
        self.perceptual = perceptual
        self.kit = kit
        self.size = generator.config.image_resolution
        self.raw_size = generator.config.renderer.resolution
        self.all_mean: Callable[[float], float] = lambda x: x
        """Averages a float over the ranks (set by the engine; adaptive weights stay identical on every rank)."""

    # ------------------------------------------------------------------------------- declared by stages
    def group_modules(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def lr(self, group: str, step: int) -> float:
        raise NotImplementedError

    def generator_loss(self, batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        raise NotImplementedError

    def predict(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prediction, target, frozen-source baseline) [B,3,S,S] for validation."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------- shared
    def groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable generator groups (restricted by `cfg.trainable`); every other generator parameter frozen."""
        groups = self.group_modules()
        if self.config.trainable:
            unknown = set(self.config.trainable) - set(groups)
            if unknown:
                raise InputError(
                    f"trainable={sorted(unknown)} are not groups of {self.name}; choose from {sorted(groups)}"
                )
            groups = {k: v for k, v in groups.items() if k in self.config.trainable}
        keep = {id(p) for ps in groups.values() for p in ps}
        for p in self.generator.parameters():
            p.requires_grad_(id(p) in keep)
        self.train_mode()
        return {k: v for k, v in groups.items() if v}

    def train_mode(self) -> None:
        """Generator in train mode except its fully frozen submodules (eval: frozen batch-norm statistics
        stay as loaded, dropout off)."""
        self.generator.train()
        for m in self.generator.modules():
            params = list(m.parameters(recurse=True))
            if m is not self.generator and params and not any(p.requires_grad for p in params):
                m.eval()

    def d_lr(self, step: int) -> float:
        o = self.config.optim
        c = o.r1_every / (o.r1_every + 1)
        base = o.lr_d * c * o.decay ** (step // o.decay_every)
        return max(o.lr_floor, base) * warmup_factor(step, o.warmup)

    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        dev = self.device().type
        if self.config.precision == "bf16":
            return torch.autocast(dev, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def condition(self, batch: dict[str, torch.Tensor]) -> Conditioning:
        ident = batch["id"]
        dev = self.device()
        cano = self.kit.pncc(ident, torch.zeros_like(batch["src_exp"]))
        src = self.kit.pncc(ident, batch["src_exp"])
        tgt = self.kit.pncc(ident, batch["tgt_exp"])
        kp_s = self.kit.keypoints(ident, batch["src_exp"], batch["src_euler"], batch["src_trans"])
        kp_d = self.kit.keypoints(ident, batch["tgt_exp"], batch["tgt_euler"], batch["tgt_trans"])
        return Conditioning(*(t.to(dev) for t in (cano, src, tgt, kp_s, kp_d)))

    def dilation(self) -> int:
        return max(1, round(self.config.losses.mask_dilation * self.size))

    def reconstruction(
        self,
        image: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
        lip_box: torch.Tensor,
        logs: dict[str, float],
        tag: str,
        full_image: bool = True,
    ) -> torch.Tensor:
        """Masked L1 + perceptual at the output size (unless `full_image` is False) + the lip-box terms."""
        w = self.config.losses
        image = image.float()
        total = image.new_zeros(())
        if full_image:
            total = w.l1 * L.masked_l1(image, target, weight)
            logs[f"{tag}l1"] = float(total.detach())
        lip = max(8, self.size // 4)
        crop_p, crop_t = (
            L.crop_boxes(image, lip_box, lip),
            L.crop_boxes(target, lip_box, lip),
        )
        lip_l1 = (crop_p - crop_t.detach()).abs().mean()
        total = total + w.lip_l1 * lip_l1
        logs[f"{tag}lip_l1"] = float(lip_l1.detach())
        if self.perceptual is not None:
            if full_image:
                p = self.perceptual(image, target)
                total = total + w.perceptual * p
                logs[f"{tag}perceptual"] = float(p.detach())
            lp = self.perceptual(crop_p, crop_t)
            total = total + w.lip_perceptual * lp
            logs[f"{tag}lip_perceptual"] = float(lp.detach())
        return total

    def adversarial(
        self,
        image: torch.Tensor,
        raw: torch.Tensor,
        camera: torch.Tensor,
        step: int,
        logs: dict[str, float],
    ) -> torch.Tensor:
        if self.discriminator is None or step < self.config.schedule.start_adv or self.config.losses.adversarial <= 0:
            return image.new_zeros(())
        self.discriminator.requires_grad_(False)
        g = L.generator_adversarial(self.discriminator(image.float().clamp(-1, 1), raw.float().clamp(-1, 1), camera))
        self.discriminator.requires_grad_(True)
        logs["g_adv"] = float(g.detach())
        return self.config.losses.adversarial * g

    def d_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.config.schedule.d_start

    def real_pairs(self, batch: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def discriminator_loss(
        self, batch: dict[str, torch.Tensor], fake: tuple[torch.Tensor, ...], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """softplus(D(fake)) + softplus(-D(real)) over the stage's real pairs, plus lazy R1 every r1_every steps."""
        assert self.discriminator is not None
        d, o = self.discriminator, self.config.optim
        f_img, f_raw, f_cam = fake
        logits_fake = d(
            f_img.detach().float().clamp(-1, 1),
            f_raw.detach().float().clamp(-1, 1),
            f_cam,
        )
        total = torch.nn.functional.softplus(logits_fake).mean()
        logs = {"d_fake": float(logits_fake.detach().mean())}
        r1_step = o.r1_every > 0 and step % o.r1_every == 0 and o.r1_gamma > 0
        reals = self.real_pairs(batch)
        r1_terms = []
        for img, raw, cam in reals:
            img, raw = img.float().clamp(-1, 1), raw.float().clamp(-1, 1)
            if r1_step:
                img, raw = (
                    img.detach().requires_grad_(True),
                    raw.detach().requires_grad_(True),
                )
            logits = d(img, raw, cam)
            total = total + torch.nn.functional.softplus(-logits).mean() / len(reals)
            if r1_step:
                r1_terms.append(r1_penalty(logits, (img, raw)))
        logs["d_real"] = float(logits.detach().mean())
        if r1_terms:
            r1 = torch.stack(r1_terms).mean()
            total = total + o.r1_gamma * o.r1_every * r1
            logs["r1"] = float(r1.detach())
        logs["d_loss"] = float(total.detach())
        return total, logs
