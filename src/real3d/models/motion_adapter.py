"""Motion Adapter (MA): PNCC maps to a tri-plane residual (Real3D-Portrait, paper §3.2).

As released (official-architecture §2.3.2, §8.1): the canonical, source and target PNCC maps
(all rendered frontal, [B,3,H,W] each, background -1) are concatenated to 9 channels, mapped to 3
by a 1x1 equalized-lr conv (`prenet`), encoded by a SegFormer MiT-B0, fused by the SegFormer all-MLP
head (1x1 conv + BN + ReLU `linear_fuse`) at H/4, and turned into plane features by `to_plane_cnn`
(3 x (conv3, LeakyReLU 0.01), bilinear x2 with align_corners=True, conv3 -> 3*32). The result is
reshaped to [B,3,32,H/2,W/2] with the same flips as `Img2Plane` and **added** to the canonical planes.

At inference the source PNCC is the one of the first driving frame (§8.2). This network runs once
per frame. Submodule names equal the official `secc_img2plane_backbone.*` names.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from real3d.config.motion_adapter import MotionAdapterConfig
from real3d.errors import InputError
from real3d.layers.equalized import EqualizedConv2d
from real3d.layers.segformer import MixVisionTransformer, SegFormerHead
from real3d.models.img2plane import triplanes_from_features
from real3d.state_dict import select_prefix

OFFICIAL_PREFIX = "secc_img2plane_backbone."


def remap_official_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Select the MA tensors of an official torso/head generator state dict and strip their prefix.

    sd: `torch.load(ckpt)["state_dict"]["model"]` of `secc2plane(_torso)`. Keys under
    `secc_img2plane_backbone.` map one-to-one onto `MotionAdapter(MotionAdapterConfig.official())`.
    """
    return select_prefix(sd, OFFICIAL_PREFIX)


class MotionAdapter(nn.Module):
    """(cano, src, tgt) PNCC maps -> tri-plane residual (paper §3.2, "MA"). Built from a config; no I/O."""

    def __init__(self, config: MotionAdapterConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MotionAdapterConfig.official()
        self.prenet = EqualizedConv2d(cfg.in_channels, cfg.prenet_channels, 1)
        self.mix_vit = MixVisionTransformer(
            cfg.prenet_channels,
            cfg.embed_dims,
            cfg.num_heads,
            cfg.mlp_ratios,
            cfg.depths,
            cfg.sr_ratios,
            qkv_bias=True,
            eps=cfg.ln_eps,
        )
        self.fuse_head = SegFormerHead(cfg.embed_dims, cfg.head_dim)
        c = cfg.cnn_channels
        self.to_plane_cnn = nn.Sequential(
            nn.Conv2d(cfg.head_dim, c, 3, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            nn.UpsamplingBilinear2d(scale_factor=2.0),
            nn.Conv2d(c, 3 * cfg.plane_channels, 3, padding=1),
        )

    def _check_inputs(self, maps: tuple[torch.Tensor, ...]) -> None:
        c = self.config.pncc_channels
        shape = tuple(maps[0].shape)
        for name, m in zip(("cano", "src", "tgt"), maps):
            if m.ndim != 4 or m.shape[1] != c or tuple(m.shape) != shape:
                raise InputError(
                    f"MotionAdapter expects three PNCC maps of one shape [B,{c},H,W]; "
                    f"got {name} {tuple(m.shape)} (cano {shape})"
                )
        h, w = shape[-2:]
        if h % 4 or w % 4:
            raise InputError(f"MotionAdapter needs H and W divisible by 4 (the release uses 512x512), got {h}x{w}")

    def encode(self, cano: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """cano, src, tgt: [B,3,H,W] -> SegFormer features [B,head_dim,H/4,W/4] (prenet, MiT, all-MLP head)."""
        self._check_inputs((cano, src, tgt))
        x = self.prenet(torch.cat([cano, src, tgt], dim=1))  # B x 3 x H x W
        return self.fuse_head(self.mix_vit(x))

    def decode(self, fused: torch.Tensor) -> torch.Tensor:
        """SegFormer features [B,head_dim,H/4,W/4] -> diff planes [B,3,C,H/2,W/2] (`to_plane_cnn`, 87% of MA's
        FLOPs at the released sizes)."""
        return triplanes_from_features(self.to_plane_cnn(fused), self.config.plane_channels)

    def features(self, cano: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """cano, src, tgt: [B,3,H,W] -> plane features before the reshape, [B,3*C,H/2,W/2]."""
        return self.to_plane_cnn(self.encode(cano, src, tgt))

    def forward(self, cano: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """PNCC maps [B,3,H,W] each in [-1,1] (background -1) -> diff planes [B,3,C,H/2,W/2]."""
        return self.decode(self.encode(cano, src, tgt))
