"""StyleGAN2 synthesis pieces in pure PyTorch (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", Sec. 2.2 weight demodulation, App. B equalized learning rate).

Used by the HTB-SR super-resolution of Real3D-Portrait (EG3D's `SuperresolutionHybrid8XDC`). Key names
and numerics follow the official checkpoints: weights stored unscaled, `resample_filter` / `noise_const`
buffers present, affine layers initialised with bias 1.

- `upfirdn2d`: upsample (zero insertion), pad, FIR filter, downsample.
- `modulated_conv2d`: style modulation, optional demodulation, fused (grouped) or unfused execution,
  optional 2x upsampling as a transposed convolution followed by the [1,3,3,1] low-pass filter.
- `SynthesisLayer`, `ToRGBLayer`, `SynthesisBlock` (skip architecture; `upsample=False` gives the
  no-upsampling variant the HTB-SR uses for its head/torso block).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from real3d.layers.equalized import ACT_GAIN, EqualizedLinear, fir_filter

NoiseMode = Literal["none", "const", "random"]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), convolve each channel with the 2-D FIR `f`,
    then keep every `down`-th pixel.

    x: [B,C,H,W]; f: [fh,fw]; padding = (left, right, top, bottom). The filter is multiplied by `gain`.
    Without `flip_filter` this is a true convolution (the filter is flipped before cross-correlating).
    `bias` [C] (optional) is added to the filtered result. Any memory format; the result keeps it.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)  # [B,C,H,1,W,1]
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])  # zeros after every pixel along W and H
        x = x.reshape(b, c, h * up, w * up)  # [B,C,up*H,up*W]
    px0, px1, py0, py1 = padding
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]  # crops
    px0, px1, py0, py1 = max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)
    conv_pad = (0, 0)
    if px0 == px1 and py0 == py1:
        conv_pad = (py0, px0)  # symmetric zero padding inside the convolution: no padded copy
    elif px0 or px1 or py0 or py1:
        x = F.pad(x, [px0, px1, py0, py1])
    k = (f * gain).to(x.dtype)
    if not flip_filter:
        k = k.flip([0, 1])
    k = k[None, None].expand(c, 1, *k.shape)  # depthwise: one copy per channel
    x = F.conv2d(x, k, bias, padding=conv_pad, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample x [B,C,H,W] -> [B,C,up*H,up*W] with the FIR low-pass `f` (the skip-RGB path)."""
    fh, fw = f.shape
    pad = ((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=pad, gain=float(up * up))


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """2-D convolution with optional 2x upsampling (StyleGAN2 `conv2d_resample`, no downsampling).

    x: [B,Cin,H,W], w: [Cout,Cin/groups,kh,kw] -> [B,Cout,up*H,up*W] (for padding = k//2).
    `up > 1` runs a stride-`up` transposed convolution followed by the FIR filter `f` with gain up^2.
    `flip_weight=True` means cross-correlation (plain `conv2d`) when there is no upsampling.
    `bias` [Cout] (optional) is added to the result (inside the last convolution: no extra pass).
    """
    cout, cin_g, kh, kw = w.shape
    if up == 1:
        if not flip_weight:
            w = w.flip([2, 3])
        return F.conv2d(x, w, bias, padding=padding, groups=groups)
    if f is None:
        raise ValueError("upsampling needs a resample filter")
    fh, fw = f.shape
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    py0 = padding + (fh + up - 1) // 2 - (kh - 1)
    py1 = padding + (fh - up) // 2 - (kh - up)
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    # conv_transpose2d wants [Cin, Cout/groups, kh, kw] per group
    wt = w.reshape(groups, cout // groups, cin_g, kh, kw)  # [G,Cout/G,Cin/G,kh,kw]
    wt = wt.transpose(1, 2).reshape(groups * cin_g, cout // groups, kh, kw)  # [G*Cin/G,Cout/G,kh,kw]
    if flip_weight:
        wt = wt.flip([2, 3])
    x = F.conv_transpose2d(x, wt, stride=up, padding=(pyt, pxt), groups=groups)
    return upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=float(up * up), bias=bias)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    flip_weight: bool = True,
    fused: bool = True,
    gain: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated convolution (StyleGAN2 Eq. 1-3), times `gain`, plus `bias`.

    x: [B,Cin,H,W], weight: [Cout,Cin,kh,kw], styles: [B,Cin] or [1,Cin] (one style for every sample),
    bias: [Cout] or None -> [B,Cout,H',W'].
    The effective per-sample weight is `weight * styles`, divided (if `demodulate`) by its L2 norm over
    (Cin, kh, kw) plus 1e-8. `fused=True` folds the modulation, demodulation and `gain` into the weight
    (one convolution; grouped over the batch when the styles differ per sample, with the bias added inside
    the convolution); `fused=False` scales activations instead (same result up to rounding).
    """
    b = x.shape[0]
    sb = styles.shape[0]  # 1: shared by the batch
    if sb not in (1, b):
        raise ValueError(f"styles must be [1,Cin] or [{b},Cin], got {list(styles.shape)}")
    cout, cin, kh, kw = weight.shape
    wmod = weight.unsqueeze(0) * styles.reshape(sb, 1, cin, 1, 1)  # [Bs,Cout,Cin,kh,kw]
    scale = None  # [Bs,Cout] per-output-channel factor: demodulation times gain
    if demodulate:
        scale = (wmod.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        if gain != 1.0:
            scale = scale * gain
    elif gain != 1.0:
        scale = torch.full((sb, cout), gain, dtype=wmod.dtype, device=wmod.device)
    if not fused:
        x = x * styles.reshape(sb, cin, 1, 1)  # styles [Bs,Cin] -> [Bs,Cin,1,1]
        x = conv2d_resample(x, weight, resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if scale is not None:
            x = x * scale.reshape(sb, cout, 1, 1)  # [Bs,Cout,1,1]
        return x if bias is None else x + bias.reshape(1, cout, 1, 1)
    if scale is not None:
        wmod = wmod * scale.reshape(sb, cout, 1, 1, 1)  # [Bs,Cout,Cin,kh,kw]
    if sb == 1:  # one weight for the whole batch: a plain convolution
        return conv2d_resample(x, wmod[0], resample_filter, up=up, padding=padding, flip_weight=flip_weight, bias=bias)
    h, w = x.shape[2:]
    x = x.reshape(1, b * cin, h, w)  # [1,B*Cin,H,W]: batch folded into groups
    x = conv2d_resample(
        x,
        wmod.reshape(b * cout, cin, kh, kw),  # [B*Cout,Cin,kh,kw]
        resample_filter,
        up=up,
        padding=padding,
        groups=b,
        flip_weight=flip_weight,
        bias=None if bias is None else bias.repeat(b),  # [B*Cout]
    )
    return x.reshape(b, cout, *x.shape[2:])  # [1,B*Cout,H',W'] -> [B,Cout,H',W']


def effective_weights(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """The demodulated per-sample weights [B,Cout,Cin,kh,kw] that `modulated_conv2d` applies."""
    wmod = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)  # [B,Cout,Cin,kh,kw]
    return wmod * (wmod.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu (gain sqrt 2). Keys: `weight`, `bias`, `noise_strength`,
    `resample_filter`, `noise_const`, `affine.{weight,bias}`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.up = up
        self.resolution = resolution
        self.padding = kernel_size // 2
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir_filter())
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "none", fused: bool | None = None
    ) -> torch.Tensor:
        """x: [B,Cin,H,W], w: [B,w_dim] or [1,w_dim] (shared) -> [B,Cout,up*H,up*W].

        lrelu(y + noise + bias) * sqrt(2) is computed as lrelu(sqrt(2) y + sqrt(2) (noise + bias)) (the
        activation is positively homogeneous): the gain and the bias go into the convolution, and the
        activation runs in place, so there is no elementwise pass besides the activation (no noise)."""
        styles = self.affine(w)  # [B,Cin]
        fused = (not self.training) if fused is None else fused
        gain = ACT_GAIN["lrelu"]
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=True,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=self.up == 1,
            fused=fused,
            gain=gain,
            bias=self.bias * gain if noise_mode == "none" else None,
        )
        if noise_mode != "none":
            if noise_mode == "const":
                noise = self.noise_const
            else:
                noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
            x = x + noise * (self.noise_strength * gain)
            x = x + (self.bias * gain).reshape(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2, inplace=True)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation + bias. Keys: `weight`, `bias`, `affine.{weight,bias}`."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
        """x: [B,Cin,H,W], w: [B,w_dim] or [1,w_dim] (shared) -> [B,Cout,H,W]."""
        styles = self.affine(w) * self.weight_gain
        fused = (not self.training) if fused is None else fused
        return modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused, bias=self.bias)


class SynthesisBlock(nn.Module):
    """StyleGAN2 'skip' synthesis block: conv0 (2x up unless `upsample=False`), conv1, ToRGB added to the
    incoming RGB (FIR-upsampled with [1,3,3,1] when `upsample`). Uses three w vectors: conv0, conv1, torgb.
    Keys: `resample_filter`, `conv0.*`, `conv1.*`, `torgb.*`."""

    num_ws = 3

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int = 3,
        upsample: bool = True,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", fir_filter())
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2 if upsample else 1)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)

    def forward(
        self,
        x: torch.Tensor,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "none",
        fused: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B,Cin,r,r] (r = resolution/2 if upsample else resolution), img: [B,3,r,r] or None,
        ws: [B,3,w_dim] or [1,3,w_dim] (shared by the batch) -> (x [B,Cout,R,R], img [B,3,R,R]) with R = resolution.
        Other sizes work too (the block is local; only noise_mode='const' needs the nominal size)."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"SynthesisBlock expects x with {self.in_channels} channels, got {list(x.shape)}")
        w0, w1, w2 = ws.unbind(dim=1)
        x = self.conv0(x, w0, noise_mode=noise_mode, fused=fused)
        x = self.conv1(x, w1, noise_mode=noise_mode, fused=fused)
        if img is not None and self.upsample:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, w2, fused=fused)
        img = y if img is None else img + y
        return x, img
