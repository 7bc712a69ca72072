"""The neural backend's motion: BFM expression coefficients, head pose and eye closure per frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from real3d.motion.cameras import PoseSequence


@dataclass(frozen=True)
class BFMTrack:
    """Per-frame 3DMM motion at the output frame rate (what `NeuralBackend.motion` produces)."""

    expression: torch.Tensor
    """[T,64] BFM 2009 expression coefficients."""
    pose: PoseSequence
    """[T] head pose (Euler angles + translation), already mapped to the source and depth-fixed."""
    blink: np.ndarray
    """[T] eyelid closure in [0,1] painted into the target PNCC; NaN = frame left as it is."""
    seed: int = 0
    """Seed of the renderer's stochastic sampling (when enabled)."""

    def __post_init__(self) -> None:
        t = self.expression.shape[0]
        if self.expression.ndim != 2 or len(self.pose) != t or self.blink.shape != (t,):
            raise ValueError(
                f"BFMTrack: expression [T,64], pose [T] and blink [T] must agree, got {tuple(self.expression.shape)}, "
                f"{len(self.pose)}, {self.blink.shape}"
            )

    def __len__(self) -> int:
        return self.expression.shape[0]
