"""Equalized-learning-rate layers (StyleGAN2, Karras et al. 2020, App. B).

Weights are stored *unscaled* (as the official checkpoints store them); the forward pass multiplies
them by ``lr_multiplier / sqrt(fan_in)``. A plain ``nn.Linear``/``nn.Conv2d`` port would be off by
that gain. Activations follow StyleGAN2's ``bias_act``: ``lrelu`` (slope 0.2) and ``relu`` carry a
``sqrt(2)`` gain, ``linear`` none.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["linear", "lrelu", "relu"]
ACT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0), "relu": math.sqrt(2.0)}
"""Output gain of each activation (StyleGAN2 `bias_act`)."""


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: Activation, dim: int = 1) -> torch.Tensor:
    """Add bias along `dim`, apply the activation and its gain (StyleGAN2 semantics)."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    elif act == "relu":
        x = F.relu(x)
    gain = ACT_GAIN[act]
    return x * gain if gain != 1.0 else x


def fir_filter(taps: tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR filter as a normalized 2-D kernel: outer(f, f) / sum."""
    f = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(f, f)
    return k / k.sum()


class EqualizedLinear(nn.Module):
    """StyleGAN2 ``FullyConnectedLayer``: keys ``weight`` [out,in], ``bias`` [out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: Activation = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] -> [..., out]."""
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        if self.activation == "linear" and b is not None:
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, self.activation, dim=-1)


class EqualizedConv2d(nn.Module):
    """StyleGAN2 ``Conv2dLayer`` without up/down-sampling: keys ``weight``, ``bias`` and the
    ``resample_filter`` buffer (stored for checkpoint compatibility; unused without resampling)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: Activation = "linear",
    ) -> None:
        super().__init__()
        self.activation = activation
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", fir_filter())
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,Cout,H,W]."""
        y = F.conv2d(x, self.weight * self.weight_gain, padding=self.padding)
        return bias_act(y, self.bias, self.activation)
