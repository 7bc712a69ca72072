"""Configuration of the tri-plane volume renderer (`real3d.models.volume_renderer`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SamplingMode = Literal["deterministic", "stochastic"]
"""Volume sampling: `deterministic` (midpoint strata, det=True inverse CDF; the parity fixtures) or `stochastic`
(uniform jitter, random inverse CDF; the released code's inference behaviour). A run-time choice, not saved."""


@dataclass(frozen=True)
class VolumeRendererConfig:
    """EG3D-style importance renderer over three axis-aligned feature planes."""

    resolution: int = 128
    """Rendered image side in pixels (one ray per pixel centre)."""
    num_samples_coarse: int = 48
    """Stratified depth samples per ray (first pass)."""
    num_samples_fine: int = 48
    """Importance depth samples per ray (second pass); 0 disables the fine pass."""
    box_warp: float = 1.0
    """Side of the cube [-box_warp/2, box_warp/2]^3 covered by the planes; also the near/far box."""
    feature_dim: int = 32
    """Channels per plane; also the number of decoded colour/feature channels."""
    decoder_hidden_dim: int = 64
    """Hidden width of the 2-layer decoder MLP."""
    decoder_lr_multiplier: float = 1.0
    """Equalized-lr multiplier of the decoder layers (the released model uses 1)."""

    def __post_init__(self) -> None:
        if self.resolution < 1 or self.num_samples_coarse < 2 or self.num_samples_fine < 0:
            raise ValueError(
                f"invalid renderer sizes (resolution={self.resolution}, coarse={self.num_samples_coarse}, "
                f"fine={self.num_samples_fine}); need resolution >= 1, coarse >= 2, fine >= 0"
            )
        if self.num_samples_fine > 0 and self.num_samples_coarse < 4:
            raise ValueError("importance sampling needs num_samples_coarse >= 4 (it drops the two end bins)")
        if self.box_warp <= 0:
            raise ValueError(f"box_warp ({self.box_warp}) must be positive")

    @staticmethod
    def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
        """Saved configs of older versions carried the run-time `mode` and `chunk_rays`; they are dropped (the
        sampling mode and the ray chunk are the caller's choice, see `VolumeRenderer`)."""
        return {k: v for k, v in data.items() if k not in ("mode", "chunk_rays")}

    @classmethod
    def official(cls) -> VolumeRendererConfig:
        """Sizes of the released `secc2plane_torso` model: 128^2 rays, 48 + 48 samples, box 1."""
        return cls()

    @classmethod
    def tiny(cls) -> VolumeRendererConfig:
        """Test size: 16x16 rays, 4 + 4 samples, 8 feature channels, hidden 16."""
        return cls(
            resolution=16,
            num_samples_coarse=4,
            num_samples_fine=4,
            feature_dim=8,
            decoder_hidden_dim=16,
        )
