"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018, Eq. 1).

d(x, y) = sum_l  mean_hw  || w_l * (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|) ||^2

with f_l the ReLU outputs of five stages of an ImageNet backbone (AlexNet or VGG16, torchvision layout)
and w_l non-negative per-channel weights (the "linear heads", 1x1 convolutions without bias). Inputs are RGB in
[-1, 1], shifted and scaled by the fixed ImageNet-derived constants of the reference implementation.

Weights (user supplied, two files): the backbone as a torchvision state dict (`alexnet-owt-7be5be79.pth` or
`vgg16-397923af.pth`: keys `features.N.weight/bias`; `classifier.*` is ignored) and the heads as published
with the `lpips` package (`weights/v0.1/alex.pth` or `vgg.pth`: keys `linL.model.1.weight`, [1,C_L,1,1]).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from real3d.eval.nets.checkpoint import load_strict, read_state_dict

Backbone = Literal["alex", "vgg"]

# (conv out channels or "M" for max-pool) of torchvision's `features`, and the index after which each LPIPS
# stage ends (exclusive slice ends into the Sequential: conv, relu, [pool] ...).
_ALEX = [
    (3, 64, 11, 4, 2),
    "R",
    "P",
    (64, 192, 5, 1, 2),
    "R",
    "P",
    (192, 384, 3, 1, 1),
    "R",
    (384, 256, 3, 1, 1),
    "R",
    (256, 256, 3, 1, 1),
    "R",
]
_ALEX_CUTS = (2, 5, 8, 10, 12)
_ALEX_CH = (64, 192, 384, 256, 256)
_VGG_CFG = [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512]
_VGG_CUTS = (4, 9, 16, 23, 30)
_VGG_CH = (64, 128, 256, 512, 512)

EXPECTED = {
    "alex": "backbone alexnet-owt-7be5be79.pth (torchvision AlexNet) + heads alex.pth (lpips v0.1: lin0..lin4)",
    "vgg": "backbone vgg16-397923af.pth (torchvision VGG16) + heads vgg.pth (lpips v0.1: lin0..lin4)",
}


def _alex_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in _ALEX:
        if item == "R":
            layers.append(nn.ReLU())
        elif item == "P":
            layers.append(nn.MaxPool2d(3, 2))
        else:
            cin, cout, k, s, p = item
            layers.append(nn.Conv2d(cin, cout, k, s, p))
    return nn.Sequential(*layers)


def _vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for item in _VGG_CFG:
        if item == "P":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, item, 3, 1, 1), nn.ReLU()]
            cin = item
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """Learned perceptual distance; `forward(x, y)` with x, y [b,3,h,w] in [-1, 1] returns [b]."""

    def __init__(self, backbone: Backbone = "alex") -> None:
        super().__init__()
        if backbone not in ("alex", "vgg"):
            raise ValueError(f"backbone must be 'alex' or 'vgg', got {backbone!r}")
        self.backbone = backbone
        self.features = _alex_features() if backbone == "alex" else _vgg_features()
        self.cuts = _ALEX_CUTS if backbone == "alex" else _VGG_CUTS
        channels = _ALEX_CH if backbone == "alex" else _VGG_CH
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU stage outputs for [b,3,h,w] input in [-1, 1]."""
        h = (x - self.shift) / self.scale
        outs, start = [], 0
        for end in self.cuts:
            for layer in self.features[start:end]:
                h = layer(h)
            outs.append(h)
            start = end
        return outs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.stages(x), self.stages(y)
        total = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, fx, fy):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit length over channels
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))  # [b,1,h,w] -> [b]
        return total


def remap_heads(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`lpips` package head keys (`linL.model.1.weight`) -> ours (`lins.L.weight`)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("lin") and k.endswith(".model.1.weight"):
            out[f"lins.{k[3:].split('.')[0]}.weight"] = v
        else:
            out[k] = v  # left as is: strict loading names it as unexpected
    return out


def remap_backbone(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision AlexNet/VGG16 keys -> ours: `features.*` kept, the classifier dropped."""
    return {k: v for k, v in sd.items() if not k.startswith("classifier.")}


def load_lpips(backbone_path: str | Path, heads_path: str | Path, backbone: Backbone = "alex") -> LPIPS:
    """LPIPS with user-supplied weights; a file of the wrong network raises CheckpointError naming the expected one."""
    model = LPIPS(backbone)
    expected = EXPECTED[backbone]
    bb = remap_backbone(read_state_dict(backbone_path, expected))
    heads = remap_heads(read_state_dict(heads_path, expected))
    sd = {**bb, **heads}
    return load_strict(model, sd, f"{backbone_path} + {heads_path}", expected)  # type: ignore[return-value]


def to_lpips_input(frames: torch.Tensor) -> torch.Tensor:
    """[b,h,w,3] uint8 RGB -> [b,3,h,w] float in [-1, 1]."""
    x = frames.float().permute(0, 3, 1, 2)  # b h w c -> b c h w
    return x / 127.5 - 1.0


def lpips_distance(model: LPIPS, a: torch.Tensor, b: torch.Tensor, size: int | None = 256) -> torch.Tensor:
    """[b] LPIPS of two uint8 frame batches [b,h,w,3] (resized to `size` x `size` first when given)."""
    x, y = to_lpips_input(a), to_lpips_input(b)
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        return model(x, y)
