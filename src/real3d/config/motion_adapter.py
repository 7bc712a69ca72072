"""Configuration of the Motion Adapter (MA) network (paper §3.2; `real3d.models.motion_adapter`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MotionAdapterConfig:
    """Sizes of the PNCC-to-triplane-residual backbone. Defaults are the released sizes (MiT-B0)."""

    pncc_channels: int = 3
    """Channels of each of the three PNCC maps (canonical, source, target) concatenated at the input."""

    prenet_channels: int = 3
    """Output channels of the 1x1 equalized-lr prenet, i.e. the MiT input channels."""

    embed_dims: tuple[int, int, int, int] = (32, 64, 160, 256)
    """Token widths of the four MiT stages."""

    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    """Attention heads of the four MiT stages."""

    mlp_ratios: tuple[float, float, float, float] = (4.0, 4.0, 4.0, 4.0)
    """Mix-FFN hidden width / token width per stage."""

    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    """Transformer blocks per MiT stage."""

    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    """Spatial-reduction ratios of the MiT attention per stage."""

    ln_eps: float = 1e-6
    """LayerNorm epsilon of the MiT blocks and stage norms."""

    head_dim: int = 256
    """Width of the SegFormer head projections and of its fused output."""

    cnn_channels: int = 256
    """Channels of the three 3x3 convs of `to_plane_cnn`."""

    plane_channels: int = 32
    """Feature channels per plane (the output has 3 * plane_channels channels before the reshape)."""

    @classmethod
    def official(cls) -> MotionAdapterConfig:
        """The released Real3D-Portrait motion adapter (5.7 M parameters, 3 x 512^2 PNCC in, 3 x 32 x 256^2 out)."""
        return cls()

    @classmethod
    def tiny(cls) -> MotionAdapterConfig:
        """A small variant for fast tests (use 32x32 or 64x64 inputs)."""
        return cls(
            embed_dims=(4, 8, 12, 16),
            num_heads=(1, 2, 2, 4),
            mlp_ratios=(2.0, 2.0, 2.0, 2.0),
            depths=(1, 1, 1, 1),
            head_dim=8,
            cnn_channels=8,
            plane_channels=4,
        )

    @property
    def in_channels(self) -> int:
        """Channels of the concatenated PNCC input (9 for the release)."""
        return 3 * self.pncc_channels
