"""Stage 2: motion adapter + I2P fine-tune (paper Sec. 3.2, App. B; official `SECC_Img2PlaneEG3DTask`).

The generator renders the target frame's head from the source frame's head image and the (cano, src, tgt)
PNCC maps, seen from the target camera; HTB-SR runs head-only (empty torso, black background, as the
head-only `secc2plane` model of the release), its torso branch frozen. Targets: the target head on black
at the output size and its antialiased downsample at the rendering size.

Losses (weights in `LossConfig`): masked L1 (1 in the dilated head, 0.2 outside; bool masks: the official
`.long()` mask's bitwise NOT is not reproduced) and perceptual at both sizes, lip box L1 + perceptual,
opacity fit + binary entropy on the undilated head mask, density smoothness every 4 steps, the PNCC-
perturbation and blink regularisers every 4 steps with adaptive weights (stored in the generator's
`lambda_pertube_*`), the src->src terms every 16 steps, and the adversarial term from `start_adv`.
Groups: i2p, motion_adapter, decoder, superresolution (its torso branch excluded) with the official
schedule (`lr`).
"""

from __future__ import annotations

import random

import torch

from real3d.face.blink import close_eyes
from real3d.train import losses as L
from real3d.train.stages.base import Conditioning, ImageStage, StepOutput, warmup_factor


class Stage2(ImageStage):
    name = "stage2"

    def group_modules(self) -> dict[str, list[torch.nn.Parameter]]:
        g = self.generator
        sr = [p for n, p in g.superresolution.named_parameters() if not n.startswith("torso_model.")]
        return {
            "i2p": list(g.cano_img2plane_backbone.parameters()),
            "motion_adapter": list(g.secc_img2plane_backbone.parameters()),
            "decoder": list(g.decoder.parameters()),
            "superresolution": sr,
        }

    def lr(self, group: str, step: int) -> float:
        o, s = self.config.optim, self.config.schedule
        decayed = o.lr_g * o.decay ** (step // o.decay_every)
        warm = warmup_factor(step, o.warmup)
        if self.second_phase(step) and group != "superresolution":
            return 0.0
        if group == "i2p":
            if s.i2p_stop is not None and step >= s.i2p_stop:
                return 0.0
            ramp = min(1.0, step / s.i2p_ramp) if s.i2p_ramp > 0 else 1.0
            return max(o.lr_floor, ramp * decayed) * warm
        if group == "decoder" and step < s.decoder_start:
            return 0.0
        if group == "superresolution" and step < s.sr_start:
            return 0.0
        return max(o.lr_floor, decayed) * warm

    def second_phase(self, step: int) -> bool:
        """The official two-phase switch is on and `step` is past start_adv: only the SR trains, and the target's
        output-size L1 / perceptual terms are off."""
        return self.config.schedule.two_phase and step >= self.config.schedule.start_adv

    # ------------------------------------------------------------------------------------------------
    def _head_only_source(self, batch: dict[str, torch.Tensor]):
        head = batch["src_head"].to(self.device())
        b, _, s, _ = head.shape
        empty = torch.full_like(head, -1.0)
        seg = torch.zeros(b, 6, s, s, device=head.device)
        seg[:, 0] = 1.0
        return self.generator.encode_source(head, empty, empty, seg)

    def _render(
        self,
        cache,
        cond: Conditioning,
        tgt_map: torch.Tensor,
        camera: torch.Tensor,
        kp_d: torch.Tensor,
    ):
        return self.generator(
            cache,
            cond.cano,
            cond.src,
            tgt_map,
            camera,
            cond.kp_s,
            kp_d,
            mode="stochastic",
            return_intermediates=True,
        )

    def _terms(
        self,
        out,
        target: torch.Tensor,
        head_mask: torch.Tensor,
        lip_box: torch.Tensor,
        logs: dict[str, float],
        tag: str,
        full_image: bool = True,
    ) -> torch.Tensor:
        w = self.config.losses
        dil = L.dilate(head_mask, self.dilation())
        weight = L.head_weight(dil, w.inside_weight, w.outside_weight)
        total = self.reconstruction(out.image, target, weight, lip_box, logs, tag, full_image)
        raw_t = L.resize(target, self.raw_size)
        raw_w = L.head_weight(L.resize(dil, self.raw_size, "nearest"), w.inside_weight, w.outside_weight)
        raw = out.image_raw.float()
        raw_l1 = L.masked_l1(raw, raw_t, raw_w)
        total = total + w.l1_raw * raw_l1
        logs[f"{tag}raw_l1"] = float(raw_l1.detach())
        if self.perceptual is not None and w.perceptual_raw > 0:
            pr = self.perceptual(raw, raw_t)
            total = total + w.perceptual_raw * pr
            logs[f"{tag}raw_perceptual"] = float(pr.detach())
        if w.opacity > 0 or w.opacity_entropy > 0:
            m = L.resize(head_mask, self.raw_size, "nearest")
            fit, ent = (
                L.opacity_fit(out.opacity, m),
                L.binary_entropy(out.opacity),
            )
            total = total + w.opacity * fit + w.opacity_entropy * ent
            logs[f"{tag}opacity"] = float(fit.detach())
            logs[f"{tag}opacity_entropy"] = float(ent.detach())
        return total

    def _regularisers(self, batch: dict[str, torch.Tensor], cond: Conditioning, logs: dict[str, float]) -> torch.Tensor:
        """PNCC-perturbation and blink terms on the motion adapter's planes, with adaptive weights."""
        w, g = self.config.losses, self.generator
        total = cond.tgt.new_zeros(())
        use_src = random.random() < w.ref_prob
        exp = batch["src_exp"] if use_src else batch["tgt_exp"]
        base_map = cond.src if use_src else cond.tgt
        lam_p = float(g.lambda_pertube_secc)
        lam_b = float(g.lambda_pertube_blink_secc)
        if w.pncc_target > 0:
            ident = batch["id"] + torch.randn_like(batch["id"]) * w.pncc_noise
            noisy = self.kit.pncc(ident, exp + torch.randn_like(exp) * w.pncc_noise).to(base_map.device)
            a = g.motion_planes(cond.cano, cond.src, base_map)
            b = g.motion_planes(cond.cano, cond.src, noisy)
            lp = (a.float() - b.float()).abs().mean()
            total = total + w.reg_every * lam_p * lp
            logs["reg_pncc"], logs["lambda_pncc"] = float(lp.detach()), lam_p
            new = L.adapt_lambda(lam_p, self.all_mean(float(lp.detach())), w.pncc_target, w.pncc_max)
            g.lambda_pertube_secc.data.fill_(new)
        if w.blink_target > 0:
            p1, p3 = random.uniform(0.0, 0.5), random.uniform(0.5, 1.0)
            p2 = (p1 + p3) / 2
            maps = [torch.stack([close_eyes(m.cpu(), p) for m in base_map]).to(base_map.device) for p in (p1, p2, p3)]
            m1, m2, m3 = (g.motion_planes(cond.cano, cond.src, m).float() for m in maps)
            lb = (m2 - 0.5 * (m1 + m3)).abs().mean()
            total = total + w.reg_every * lam_b * lb
            logs["reg_blink"], logs["lambda_blink"] = float(lb.detach()), lam_b
            new = L.adapt_lambda(lam_b, self.all_mean(float(lb.detach())), w.blink_target, w.blink_max)
            g.lambda_pertube_blink_secc.data.fill_(new)
        return total

    def generator_loss(self, batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        w, dev = self.config.losses, self.device()
        cond = self.condition(batch)
        tgt_head = batch["tgt_head"].to(dev)
        cam = batch["tgt_cam"].to(dev)
        logs: dict[str, float] = {}
        with self.autocast():
            cache = self._head_only_source(batch)
            out = self._render(cache, cond, cond.tgt, cam, cond.kp_d)
            total = self._terms(
                out,
                tgt_head,
                batch["tgt_head_mask"].to(dev),
                batch["tgt_lip_box"].to(dev),
                logs,
                "",
                full_image=not self.second_phase(step),
            )
            total = total + self.adversarial(out.image, out.image_raw, cam, step, logs)
            if w.density > 0 and w.density_every > 0 and step % w.density_every == 0:
                planes = out.cano_planes + out.motion_planes
                dens = L.density_smoothness(
                    self.generator.decoder,
                    planes,
                    self.generator.config.renderer.box_warp,
                )
                total = total + w.density * w.density_every * dens
                logs["density"] = float(dens.detach())
            if w.reg_every > 0 and step % w.reg_every == 0 and (w.pncc_target > 0 or w.blink_target > 0):
                total = total + self._regularisers(batch, cond, logs)
            if w.self_every > 0 and step % w.self_every == 0:
                src_cam = batch["src_cam"].to(dev)
                out_s = self._render(cache, cond, cond.src, src_cam, cond.kp_s)
                total = total + self._terms(
                    out_s,
                    batch["src_head"].to(dev),
                    batch["src_head_mask"].to(dev),
                    batch["src_lip_box"].to(dev),
                    logs,
                    "self_",
                )
        logs["g_loss"] = float(total.detach())
        images = {
            "source": batch["src_head"],
            "target": batch["tgt_head"],
            "prediction": out.image.detach().float(),
            "pncc": cond.tgt,
            "opacity": out.opacity.detach().float(),
        }
        return StepOutput(total, logs, (out.image.detach(), out.image_raw.detach(), cam), images)

    def real_pairs(self, batch: dict[str, torch.Tensor]):
        dev = self.device()
        pairs = []
        for p in ("tgt", "src"):
            head = batch[f"{p}_head"].to(dev)
            pairs.append((head, L.resize(head, self.raw_size), batch[f"{p}_cam"].to(dev)))
        return pairs

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]):
        cond = self.condition(batch)
        with self.autocast():
            cache = self._head_only_source(batch)
            out = self.generator(
                cache,
                cond.cano,
                cond.src,
                cond.tgt,
                batch["tgt_cam"].to(self.device()),
                cond.kp_s,
                cond.kp_d,
                mode="deterministic",
            )
        return out.image.float(), batch["tgt_head"], batch["src_head"]
