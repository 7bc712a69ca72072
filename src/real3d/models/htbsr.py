"""HTB-SR: head-torso-background super-resolution (Real3D-Portrait, Ye et al. 2024, Sec. 3.3, Eq. 5).

The released `SuperresolutionHybrid8XDC_Warp` with the v2 fusion, as the official code computes it:

    ws      = ones                                   # constant style vectors
    x, rgb  = block0(feat128, rgb128)                # StyleGAN2 block, 128 -> 256
    torso   = TorsoWarp(torso_256 + masks, kp_s, kp_d, rgb_256, a_h)
    a_h     = weights_256                            # NeRF opacity, antialiased resize to 256
    rgb     = rgb*a_h + torso.rgb*(1-a_h)
    x       = fuse_head_torso_convs(cat(x*a_h, torso_encoder(torso.hidden)*(1-a_h)))   # 1x1 encoder folded in
    x, rgb  = head_torso_block(x, rgb)               # StyleGAN2 block without upsampling, 256
    a_p     = clamp(torso.occlusion_2 + where(a_h > 0.9, 1, a_h), 0, 1)
    rgb     = rgb*a_p + bg_256*(1-a_p)
    x       = fuse_fg_bg_convs(cat(x*a_p, bg_encoder(bg_256)*(1-a_p)))   # first (1x1) conv's bg half per source
    x, rgb  = block1(x, rgb)                         # 256 -> 512
    image   = clamp(rgb, -1, 1)

The torso appearance volume and the background features depend only on the source: `encode_source`
computes them once per video, `forward(..., cache=...)` reuses them.
State-dict keys equal the official ones under `superresolution.` (see `remap_official_state_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from real3d.config.htbsr import HTBSRConfig
from real3d.errors import InputError
from real3d.layers.stylegan2 import SynthesisBlock
from real3d.models.torso_warp import TorsoSource, TorsoWarp
from real3d.state_dict import select_prefix

OFFICIAL_PREFIX = "superresolution."


@dataclass
class HTBSRSource:
    """Per-source cache of HTB-SR (from `HTBSR.encode_source`)."""

    torso: TorsoSource
    """Torso appearance volume, masked volume and compressed motion-estimator source."""
    bg: torch.Tensor
    """[B,3,256,256] background image resized to the fusion resolution."""
    bg_fused: torch.Tensor
    """[B,fuse_hidden,256,256] the background half of the first (1x1) fg/bg fusion conv applied to
    `bg_encoder(bg)`, plus that conv's bias (see `HTBSR._fuse_fg_bg`)."""

    def expand(self, batch: int) -> HTBSRSource:
        """Broadcast a batch-1 source to `batch` frames."""
        if self.bg.shape[0] == batch:
            return self
        if self.bg.shape[0] != 1:
            raise InputError(
                f"the source cache has batch {self.bg.shape[0]} but the frames have batch {batch}; "
                "encode one source per frame batch or a single (batch 1) source"
            )
        return HTBSRSource(
            self.torso.expand(batch),
            self.bg.expand(batch, *self.bg.shape[1:]),
            self.bg_fused.expand(batch, *self.bg_fused.shape[1:]),
        )


@dataclass
class HTBSROutput:
    """Outputs and intermediates of `HTBSR.forward` (names of the official-parity fixture)."""

    image: torch.Tensor
    """[B,3,512,512] final image, clamped to [-1,1]."""
    occlusion: torch.Tensor
    """[B,1,64,64] torso motion-estimator occlusion (unused by the fusion)."""
    occlusion_2: torch.Tensor
    """[B,1,256,256] torso alpha after the refining predictor."""
    torso_rgb: torch.Tensor
    """[B,3,256,256] warped torso RGB."""
    deformed_torso_hid: torch.Tensor
    """[B,64,256,256] torso generator hidden features."""
    torso_deformation: torch.Tensor
    """[B,16,64,64,3] torso motion field (`grid_sample` grid, align_corners=True)."""
    torso_occlusion_2_pre: torch.Tensor
    """[B,1,64,64] torso alpha from the motion estimator, before refinement."""
    torso_appearance_feats: torch.Tensor
    """[B,32,16,64,64] torso appearance volume before the torso-mask multiplication."""
    sr_block0_rgb: torch.Tensor
    """[B,3,256,256] RGB after block0 (FIR-upsampled raw RGB plus ToRGB)."""
    sr_head_torso_block_rgb: torch.Tensor
    """[B,3,256,256] RGB after the head/torso fusion block."""
    sr_block1_in_rgb: torch.Tensor
    """[B,3,256,256] RGB after the background blend (input of block1)."""
    head_opacity: torch.Tensor
    """[B,1,256,256] the renderer's opacity at 256 (official `weights_256`), the head/torso alpha a_h of Eq. 5."""
    person_alpha: torch.Tensor
    """[B,1,256,256] person mask clamp(occlusion_2 + thresholded head alpha, 0, 1)."""


def person_alpha(head_alpha: torch.Tensor, torso_alpha: torch.Tensor, threshold: float) -> torch.Tensor:
    """Person mask of Eq. 5: clamp(torso_alpha + head_alpha', 0, 1) where head_alpha' is head_alpha with
    values above `threshold` set to 1. All [B,1,H,W]."""
    head_occ = torch.where(head_alpha > threshold, torch.ones_like(head_alpha), head_alpha)
    return (torso_alpha + head_occ).clamp(0, 1)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, 1, k // 2)


def _lrelu() -> nn.LeakyReLU:
    """The release's `nn.LeakyReLU()` (slope 0.01), in place: it always follows a conv's fresh output."""
    return nn.LeakyReLU(inplace=True)


def alpha_concat(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, complement: bool = False) -> torch.Tensor:
    """cat([a * alpha, b * (1 - alpha)], dim=1), channels-last (the fusion convs' input); with `complement`
    the channel (1 - alpha) is appended.

    a: [B,Ca,H,W], b: [B,Cb,H,W], alpha: [B,1,H,W] -> [B,Ca+Cb(+1),H,W]. Without autograd the products
    are written straight into the result (no separate concatenation pass), in the dtype of `a` (bf16 under
    autocast; `b` and `alpha` are cast to it first: mixed-dtype products into a strided view are slow)."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or alpha.requires_grad):
        parts = [a * alpha, b * (1 - alpha)] + ([1 - alpha] if complement else [])
        return torch.cat(parts, dim=1).contiguous(memory_format=torch.channels_last)
    ca, cb = a.shape[1], b.shape[1]
    alpha, b = alpha.to(a.dtype), b.to(a.dtype)
    out = torch.empty(
        (a.shape[0], ca + cb + int(complement), *a.shape[2:]),
        dtype=a.dtype,
        device=a.device,
        memory_format=torch.channels_last,
    )  # [B,Ca+Cb(+1),H,W]
    torch.mul(a, alpha, out=out[:, :ca])
    rest = torch.sub(1, alpha, out=out[:, ca + cb :]) if complement else 1 - alpha
    torch.mul(b, rest, out=out[:, ca : ca + cb])
    return out


class HTBSR(nn.Module):
    """The official `SuperresolutionHybrid8XDC_Warp` (v2 head/torso fusion, threshold 0.9, ws = ones)."""

    def __init__(self, cfg: HTBSRConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HTBSRConfig.official()
        self.config = cfg
        c0, c1, wd = cfg.block0_channels, cfg.block1_channels, cfg.w_dim
        mid, out = cfg.mid_resolution, cfg.output_resolution
        hid = cfg.torso.generator_channels[-1]
        self.block0 = SynthesisBlock(cfg.feature_channels, c0, wd, mid, upsample=True)
        self.block1 = SynthesisBlock(c0, c1, wd, out, upsample=True)
        self.torso_model = TorsoWarp(cfg.torso)
        self.torso_encoder = nn.Sequential(_conv(hid, c0, 1))
        self.bg_encoder = nn.Sequential(
            _conv(3, cfg.bg_hidden, 3), _lrelu(), _conv(cfg.bg_hidden, c0, 3), _lrelu(), _conv(c0, c0, 3)
        )
        ah = cfg.alpha_hidden  # v3 only: stored in the checkpoint, never called by the v2 fusion
        self.head_torso_alpha_predictor = nn.Sequential(
            _conv(3 + 1 + 3, ah, 3), nn.LeakyReLU(), _conv(ah, ah, 3), nn.LeakyReLU(), _conv(ah, 1, 3), nn.Sigmoid()
        )
        self.fuse_head_torso_convs = nn.Sequential(_conv(2 * c0, c0, 3), _lrelu(), _conv(c0, c0, 3))
        self.head_torso_block = SynthesisBlock(c0, c0, wd, mid, upsample=False)
        self.fuse_fg_bg_convs = nn.Sequential(
            _conv(2 * c0, cfg.fuse_hidden, 1),
            _lrelu(),
            _conv(cfg.fuse_hidden, c0, 3),
            _lrelu(),
            _conv(c0, c0, 3),
        )

    def _resize(self, x: torch.Tensor, size: int, antialias: bool | None = None) -> torch.Tensor:
        aa = self.config.antialias if antialias is None else antialias
        if aa and x.dtype in (torch.bfloat16, torch.float16):  # no reduced-precision antialias kernel on CPU
            return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True).to(
                x.dtype
            )
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=aa)

    def encode_source(self, ref_torso_img: torch.Tensor, bg_img: torch.Tensor, segmap: torch.Tensor) -> HTBSRSource:
        """Per-source work, done once per video.

        ref_torso_img: [B,3,512,512] in [-1,1] (neck + clothes, -1 elsewhere); bg_img: [B,3,512,512];
        segmap: [B,6,512,512] one-hot float (0 bg, 1 hair, 2 neck, 3 face, 4 clothes, 5 others).
        """
        for name, t, ch in (("ref_torso_img", ref_torso_img, 3), ("bg_img", bg_img, 3), ("segmap", segmap, 6)):
            if t.ndim != 4 or t.shape[1] != ch:
                raise InputError(f"{name} must be [B,{ch},H,W], got {list(t.shape)}")
        mid = self.config.mid_resolution
        torso = self.torso_model.encode_source(self._resize(ref_torso_img, mid), segmap.float())
        bg = self._resize(bg_img, mid)
        bg_features = self.bg_encoder(bg.contiguous(memory_format=torch.channels_last))  # as the frames use it
        first = self.fuse_fg_bg_convs[0]
        bg_fused = F.conv2d(bg_features, first.weight[:, self.config.block0_channels :], first.bias)
        return HTBSRSource(torso, bg, bg_fused)

    def forward(
        self,
        rgb128: torch.Tensor,
        feature128: torch.Tensor,
        opacity128: torch.Tensor,
        kp_s: torch.Tensor,
        kp_d: torch.Tensor,
        ref_torso_img: torch.Tensor | None = None,
        bg_img: torch.Tensor | None = None,
        segmap: torch.Tensor | None = None,
        cache: HTBSRSource | None = None,
    ) -> HTBSROutput:
        """rgb128: [B,3,128,128] raw rendered RGB (unclamped `feature_image[:, :3]`);
        feature128: [B,32,128,128] rendered features; opacity128: [B,1,128,128] accumulated opacity;
        kp_s, kp_d: [B,68,3] source / driving lm68 landmarks in [-1,1], z = 0.
        Source inputs: either `cache` (from `encode_source`) or ref_torso_img, bg_img, segmap."""
        cfg = self.config
        if cache is None:
            if ref_torso_img is None or bg_img is None or segmap is None:
                raise InputError(
                    "HTBSR.forward needs either cache= (from encode_source) or ref_torso_img, bg_img and segmap"
                )
            cache = self.encode_source(ref_torso_img, bg_img, segmap)
        b = feature128.shape[0]
        if rgb128.shape[1] != 3 or feature128.shape[1] != cfg.feature_channels or opacity128.shape[1] != 1:
            raise InputError(
                f"expected rgb [B,3,H,W], features [B,{cfg.feature_channels},H,W] and weights [B,1,H,W]; got "
                f"{list(rgb128.shape)}, {list(feature128.shape)}, {list(opacity128.shape)}"
            )
        if kp_s.shape != kp_d.shape or kp_s.ndim != 3 or kp_s.shape[0] != b or kp_s.shape[2] != 3:
            raise InputError(f"kp_s and kp_d must both be [B,68,3]; got {list(kp_s.shape)} and {list(kp_d.shape)}")
        cache = cache.expand(b)
        res, mid = cfg.input_resolution, cfg.mid_resolution
        x, rgb = feature128, rgb128
        weights = opacity128.detach()
        if x.shape[-1] != res:
            x, rgb = self._resize(x, res), self._resize(rgb, res)
        ws = torch.ones(1, SynthesisBlock.num_ws, cfg.w_dim, dtype=x.dtype, device=x.device)  # shared by the batch
        # channels-last (NHWC) from here on: oneDNN's convolutions and the per-pixel blends run faster in it
        x = x.contiguous(memory_format=torch.channels_last)
        noise = cfg.noise_mode

        rgb_mid = self._resize(rgb, mid)
        head_alpha = self._resize(weights, mid)  # a_h [B,1,256,256]
        x, rgb = self.block0(x, rgb, ws, noise_mode=noise)
        sr_block0_rgb = rgb
        torso = self.torso_model(cache.torso, kp_s, kp_d, rgb_mid.detach(), head_alpha.detach())

        # head/torso: alpha-weighted concatenation, then a StyleGAN block at 256
        rgb = rgb * head_alpha + torso.rgb * (1 - head_alpha)
        x = self._fuse_head_torso(x, torso.hidden, head_alpha)
        x, rgb = self.head_torso_block(x, rgb, ws, noise_mode=noise)
        sr_head_torso_block_rgb = rgb

        # person/background: thresholded head alpha plus torso alpha
        person = person_alpha(head_alpha, self._resize(torso.occlusion_2, mid), cfg.head_threshold)
        rgb = rgb * person + cache.bg * (1 - person)
        sr_block1_in_rgb = rgb
        x = self._fuse_fg_bg(x, cache.bg_fused, person)
        x, rgb = self.block1(x, rgb, ws, noise_mode=noise)

        return HTBSROutput(
            image=rgb.clamp(-1, 1).contiguous(),
            occlusion=torso.occlusion,
            occlusion_2=torso.occlusion_2,
            torso_rgb=torso.rgb,
            deformed_torso_hid=torso.hidden,
            torso_deformation=torso.deformation,
            torso_occlusion_2_pre=torso.occlusion_2_pre,
            torso_appearance_feats=cache.torso.appearance_raw,
            sr_block0_rgb=sr_block0_rgb,
            sr_head_torso_block_rgb=sr_head_torso_block_rgb,
            sr_block1_in_rgb=sr_block1_in_rgb,
            head_opacity=head_alpha,
            person_alpha=person,
        )

    def _fuse_head_torso(self, x: torch.Tensor, torso_hidden: torch.Tensor, head_alpha: torch.Tensor) -> torch.Tensor:
        """`fuse_head_torso_convs(cat([x * a, torso_encoder(torso_hidden) * (1 - a)]))`, a = head alpha.

        The torso encoder is a 1x1 conv (64 -> 256 channels) and (1 - a) a per-pixel scalar, so
        conv3x3_B((W h + c) * (1 - a)) = conv3x3_{B.W}(h * (1 - a)) + conv3x3_{B.c}(1 - a), where B is the
        torso half of the first fusion conv: its input shrinks from 512 to 256 + 64 + 1 channels (-60 GFLOP
        per frame at the released sizes, same function up to float rounding).
        x: [B,C0,H,W]; torso_hidden: [B,hid,H,W]; head_alpha: [B,1,H,W] -> [B,C0,H,W]."""
        first, encoder = self.fuse_head_torso_convs[0], self.torso_encoder[0]
        c0 = x.shape[1]
        dt = torch.promote_types(first.weight.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):  # fold in (at least) float32; the conv casts once
            w_x, w_torso = first.weight[:, :c0].to(dt), first.weight[:, c0:].to(dt)  # [C0,C0,3,3] each
            w_hidden = torch.einsum("ocyx,ci->oiyx", w_torso, encoder.weight[:, :, 0, 0].to(dt))  # [C0,hid,3,3]
            w_rest = torch.einsum("ocyx,c->oyx", w_torso, encoder.bias.to(dt)).unsqueeze(1)  # [C0,1,3,3]
            weight = torch.cat([w_x, w_hidden, w_rest], 1).contiguous(memory_format=torch.channels_last)
        y = F.conv2d(
            alpha_concat(x, torso_hidden, head_alpha, complement=True),
            weight.to(first.weight.dtype),
            first.bias,
            padding=first.padding,
        )
        return self.fuse_head_torso_convs[1:](y)

    def _fuse_fg_bg(self, x: torch.Tensor, bg_fused: torch.Tensor, person: torch.Tensor) -> torch.Tensor:
        """`fuse_fg_bg_convs(cat([x * p, bg_encoder(bg) * (1 - p)]))`, p = person alpha.

        The first fusion conv is 1x1, so it commutes with the per-pixel weights: its output is
        p * (W_x x + b) + (1 - p) * (W_bg bg_features + b), where the background term is per source
        (`HTBSRSource.bg_fused`). Same function up to float rounding, without the 512-channel concatenation.
        x: [B,C0,H,W]; bg_fused: [B,fuse_hidden,H,W]; person: [B,1,H,W] -> [B,C0,H,W]."""
        first = self.fuse_fg_bg_convs[0]
        fg = F.conv2d(x, first.weight[:, : x.shape[1]], first.bias)  # [B,fuse_hidden,H,W]
        y = torch.lerp(bg_fused.to(fg.dtype), fg, person.to(fg.dtype))  # p * fg + (1 - p) * bg
        return self.fuse_fg_bg_convs[1:](y)


def remap_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Select the `superresolution.*` entries of the official `OSAvatarSECC_Img2plane_Torso` state dict
    and strip the prefix; the result loads strictly into `HTBSR(HTBSRConfig.official())`."""
    return select_prefix(state_dict, OFFICIAL_PREFIX)
