"""Exponential moving average of the generator's weights (an option: the official training has none).

`GeneratorEMA` keeps a frozen copy of the generator; after every optimizer step its trainable parameters move
towards the live ones, `ema <- d * ema + (1 - d) * live` with d = min(decay, (1 + step) / (10 + step)) (the
usual warm-up, so the average does not sit on the random initialisation for the first ~10 / (1 - decay) steps),
and everything else (frozen parameters, the adaptive regulariser weights, batch-norm statistics) is copied.
The engine keeps it on rank 0 only (the replicas are identical), validates with it next to the live weights,
checkpoints it (`generator_ema/`) so a resumed run continues the same average, and exports it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA:
    """EMA copy of `generator` (same class and config, eval mode, no gradients)."""

    def __init__(self, generator: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    def rate(self, step: int) -> float:
        """The decay used after optimizer step `step` (0-based)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, generator: nn.Module, step: int) -> None:
        d = self.rate(step)
        live = dict(generator.named_parameters())
        for name, p in self.module.named_parameters():
            src = live[name]
            if src.requires_grad:
                p.lerp_(src.detach(), 1.0 - d)
            else:
                p.copy_(src.detach())
        live_buffers = dict(generator.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(live_buffers[name])
