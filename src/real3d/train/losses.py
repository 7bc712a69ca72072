"""Loss terms of the image stages (official facts: shared/docs/official-training.md §3-4).

All images are [B,3,H,W] in [-1,1]; masks and weights [B,1,H,W]; opacities [B,1,h,w] in [0,1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from real3d.models.volume_renderer import plane_table, sample_triplanes_mean


def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Official weighted L1: mean(clamp(sum_c |pred - target| * w, 0, max(0.5, q_0.8))), where q_0.8 is the
    0.8-quantile of the weighted per-pixel errors (outliers clipped, the quantile not differentiated)."""
    err = (pred - target.detach()).abs().sum(1, keepdim=True) * weight  # Bx1xHxW
    flat = err.detach().float().flatten()
    if flat.numel() > 4_000_000:  # torch.quantile's input limit: estimate from a strided subsample
        flat = flat[:: math.ceil(flat.numel() / 4_000_000)]
    hi = torch.clamp(torch.quantile(flat, 0.8), min=0.5)
    return torch.minimum(err.clamp(min=0), hi.to(err.dtype)).mean()


def head_weight(mask: torch.Tensor, inside: float = 1.0, outside: float = 0.2) -> torch.Tensor:
    """Per-pixel weights from a bool/0-1 mask (as bool: the official `.long()` mask's bitwise NOT gave 0.6 / -0.2,
    see docs/training.md)."""
    m = mask.bool()
    return torch.where(
        m,
        torch.full_like(mask, inside, dtype=torch.float32),
        torch.full_like(mask, outside, dtype=torch.float32),
    )


def dilate(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Max-pool dilation of a [B,1,H,W] 0/1 mask by a kernel x kernel square (kernel odd, scaled by the caller)."""
    k = max(1, kernel | 1)
    return F.max_pool2d(mask.float(), k, stride=1, padding=k // 2)


def resize(img: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Antialiased bilinear resize ([B,C,H,W] -> [B,C,size,size]); nearest for `mode='nearest'`."""
    if img.shape[-1] == size:
        return img
    if mode == "nearest":
        return F.interpolate(img, size=(size, size), mode="nearest")
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def crop_boxes(img: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable crops: boxes [B,4] (x0, y0, x1, y1) in pixels of `img` -> [B,C,size,size] (bilinear)."""
    b, _, h, w = img.shape
    x0, y0, x1, y1 = boxes.to(img.dtype).unbind(-1)
    theta = img.new_zeros(b, 2, 3)
    theta[:, 0, 0] = (x1 - x0) / w
    theta[:, 0, 2] = (x0 + x1) / w - 1
    theta[:, 1, 1] = (y1 - y0) / h
    theta[:, 1, 2] = (y0 + y1) / h - 1
    grid = F.affine_grid(theta, [b, img.shape[1], size, size], align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def opacity_fit(alpha: torch.Tensor, head_mask: torch.Tensor) -> torch.Tensor:
    """mean(a^2 off the head) + mean((a-1)^2 on the head), a = clamp(alpha, 1e-5, 1-1e-5) (official `weights_img`)."""
    a = alpha.float().clamp(1e-5, 1 - 1e-5)
    m = head_mask.bool()
    off = (a[~m] ** 2).mean() if (~m).any() else a.new_zeros(())
    on = ((a[m] - 1) ** 2).mean() if m.any() else a.new_zeros(())
    return off + on


def binary_entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy in bits, pushing an opacity toward 0 or 1."""
    a = alpha.float().clamp(1e-5, 1 - 1e-5)
    return -(a * torch.log2(a) + (1 - a) * torch.log2(1 - a)).mean()


def density_smoothness(
    decoder,
    planes: torch.Tensor,
    box_warp: float = 1.0,
    num_points: int = 1000,
    offset_std: float = 0.005,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EG3D density regulariser: L1 between sigma at uniform points in the box and at those points moved by
    N(0, offset_std^2). planes: [B,3,C,H,W]; decoder: the `TriplaneDecoder`."""
    b = planes.shape[0]
    pts = (torch.rand(b, num_points, 3, generator=generator, device=planes.device) - 0.5) * box_warp
    moved = pts + torch.randn(pts.shape, generator=generator, device=planes.device) * offset_std
    table = plane_table(planes.float())
    both = torch.cat([pts, moved], 1)
    feats = sample_triplanes_mean(table, planes.shape, both, box_warp)
    _, sigma = decoder.decode_mean(feats)
    sigma = sigma.reshape(b, 2, num_points)
    return (sigma[:, 0] - sigma[:, 1]).abs().mean()


def generator_adversarial(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss softplus(-D(G))."""
    return F.softplus(-logits_fake).mean()


def discriminator_adversarial(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """softplus(D(fake)) + softplus(-D(real))."""
    return F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()


def adapt_lambda(current: float, loss: float, target: float, lambda_max: float, rate: float = 0.01) -> float:
    """Official adaptive regulariser weight: lambda + rate * (log10 L - log10 target), clamped to [0, max];
    0 when the target is 0 (the term is off)."""
    if target <= 0:
        return 0.0
    step = rate * (math.log10(max(loss, 1e-12)) - math.log10(target))
    return float(min(max(current + step, 0.0), lambda_max))
