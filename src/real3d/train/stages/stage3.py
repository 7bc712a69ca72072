"""Stage 3: HTB-SR with everything else frozen (paper Sec. 3.3, App. B; official `secc_img2plane_torso_task`).

The head (I2P, motion adapter, renderer) runs without gradient, i.e. detached, as the official code detaches
the head RGB and opacity before the torso and fusion branches; only `superresolution` trains. The torso
motion field and occlusions keep their values but their gradient is scaled by 0.1 inside
`real3d.models.torso_warp` (`TorsoWarpConfig.grad_scale`). Target: the target frame composited on the clip's
static background (`com`), at the output size.

Losses: masked L1 (1 on the dilated torso, 0.5 elsewhere) + perceptual, lip box L1 + perceptual, binary
entropy of the torso alpha, the src->src terms every 4 steps, adversarial from `start_adv` (real pairs:
target com + the target head downsampled; fake: prediction + its raw rendering).
"""

from __future__ import annotations

import torch

from real3d.models.real3d_portrait import SourceCache
from real3d.train import losses as L
from real3d.train.stages.base import ImageStage, StepOutput, warmup_factor


class Stage3(ImageStage):
    name = "stage3"

    def group_modules(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"superresolution": list(self.generator.superresolution.parameters())}

    def lr(self, group: str, step: int) -> float:
        o = self.config.optim
        return max(o.lr_floor, o.lr_g * o.decay ** (step // o.decay_every)) * warmup_factor(step, o.warmup)

    def _forward(
        self,
        batch: dict[str, torch.Tensor],
        cond,
        tgt_map: torch.Tensor,
        camera: torch.Tensor,
        kp_d: torch.Tensor,
        mode: str,
    ):
        g, dev = self.generator, self.device()
        with torch.no_grad():
            cano = g.cano_img2plane_backbone(batch["src_head"].to(dev))
            secc = g.motion_planes(cond.cano, cond.src, tgt_map)
            rendered = g.render(cano, secc, camera, mode)
        seg = torch.nn.functional.one_hot(batch["src_seg"].to(dev), 6).permute(0, 3, 1, 2).float()
        src = g.superresolution.encode_source(batch["src_torso"].to(dev), batch["bg"].to(dev), seg)
        feat = rendered.feature_image
        sr = g.superresolution(feat[:, :3], feat, rendered.opacity, cond.kp_s, kp_d, cache=src)
        return sr, rendered, SourceCache(cano, src)

    def _terms(self, sr, target, torso_mask, lip_box, logs, tag):
        w = self.config.losses
        weight = L.head_weight(L.dilate(torso_mask, self.dilation()), w.inside_weight, w.outside_weight)
        total = self.reconstruction(sr.image, target, weight, lip_box, logs, tag)
        if w.occlusion_entropy > 0:
            ent = L.binary_entropy(sr.occlusion_2)
            total = total + w.occlusion_entropy * ent
            logs[f"{tag}occlusion_entropy"] = float(ent.detach())
        return total

    def generator_loss(self, batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        w, dev = self.config.losses, self.device()
        cond = self.condition(batch)
        cam = batch["tgt_cam"].to(dev)
        logs: dict[str, float] = {}
        with self.autocast():
            sr, rendered, _ = self._forward(batch, cond, cond.tgt, cam, cond.kp_d, "stochastic")
            total = self._terms(
                sr,
                batch["tgt_com"].to(dev),
                batch["tgt_torso_mask"].to(dev),
                batch["tgt_lip_box"].to(dev),
                logs,
                "",
            )
            total = total + self.adversarial(sr.image, rendered.image_raw, cam, step, logs)
            if w.self_every > 0 and step % w.self_every == 0:
                sr_s, _, _ = self._forward(
                    batch,
                    cond,
                    cond.src,
                    batch["src_cam"].to(dev),
                    cond.kp_s,
                    "stochastic",
                )
                total = total + self._terms(
                    sr_s,
                    batch["src_com"].to(dev),
                    batch["src_torso_mask"].to(dev),
                    batch["src_lip_box"].to(dev),
                    logs,
                    "self_",
                )
        logs["g_loss"] = float(total.detach())
        images = {
            "source": batch["src_com"],
            "target": batch["tgt_com"],
            "prediction": sr.image.detach().float(),
            "pncc": cond.tgt,
            "opacity": sr.person_alpha.detach().float(),
        }
        return StepOutput(total, logs, (sr.image.detach(), rendered.image_raw.detach(), cam), images)

    def real_pairs(self, batch: dict[str, torch.Tensor]):
        dev = self.device()
        return [
            (
                batch["tgt_com"].to(dev),
                L.resize(batch["tgt_head"].to(dev), self.raw_size),
                batch["tgt_cam"].to(dev),
            )
        ]

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]):
        cond = self.condition(batch)
        with self.autocast():
            sr, _, _ = self._forward(
                batch,
                cond,
                cond.tgt,
                batch["tgt_cam"].to(self.device()),
                cond.kp_d,
                "deterministic",
            )
        return sr.image.float(), batch["tgt_com"], batch["src_com"]
