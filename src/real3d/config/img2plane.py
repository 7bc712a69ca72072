"""Configuration of the Img2Plane (I2P) network (paper §3.1; `real3d.models.img2plane`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Img2PlaneConfig:
    """Sizes of the image-to-triplane backbone. Defaults are the released `secc2plane_torso` sizes."""

    image_channels: int = 3
    """Channels of the input image (RGB). Two positional grid channels are appended internally."""

    resnet_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    """Basic blocks per ResNet stage (ResNet-34)."""

    resnet_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    """Output channels of the four ResNet stages; the stem has `resnet_widths[0]` channels."""

    aspp_channels: int = 256
    """Width of every ASPP branch, of its projection and of the DeepLabV3 output."""

    atrous_rates: tuple[int, int, int] = (12, 24, 36)
    """Dilation rates of the three 3x3 ASPP branches."""

    vit_dim: int = 1024
    """Token width of both ViTs (LowResolutionViT, TriplanePredictorViT); must be divisible by 4."""

    vit_heads: int = 4
    """Attention heads of every ViT block."""

    vit_mlp_ratio: float = 2.0
    """Mix-FFN hidden width / `vit_dim`."""

    low_res_blocks: int = 5
    """Transformer blocks of the LowResolutionViT (spatial-reduction ratio 1)."""

    triplane_blocks: int = 1
    """Transformer blocks of the TriplanePredictorViT."""

    triplane_sr_ratio: int = 2
    """Spatial-reduction ratio of the TriplanePredictorViT attention."""

    low_res_hidden: int = 128
    """Channels of the two convs after the bilinear upsamplings in the LowResolutionViT."""

    feature_channels: int = 96
    """Channels of the low-res and high-res branch outputs that the triplane predictor concatenates."""

    high_res_stem: int = 64
    """Channels of the HighResoEncoder's 7x7 stride-2 stem conv."""

    high_res_layers: int = 4
    """3x3 conv + LeakyReLU layers of the HighResoEncoder after its stem."""

    triplane_hidden: tuple[int, int] = (256, 128)
    """Channels of the two convs before the TriplanePredictorViT patch embedding."""

    triplane_after_cat: tuple[int, int, int] = (256, 128, 128)
    """Channels of the three convs after the skip concatenation in the TriplanePredictorViT."""

    plane_channels: int = 32
    """Feature channels per plane (the output has 3 * plane_channels channels before the reshape)."""

    ln_eps: float = 1e-5
    """LayerNorm epsilon of the ViT blocks (PyTorch's default, as in the official I2P)."""

    @classmethod
    def official(cls) -> Img2PlaneConfig:
        """The released Real3D-Portrait I2P (87.3 M parameters, 512^2 in, 3 x 32 x 256^2 out)."""
        return cls()

    @classmethod
    def tiny(cls) -> Img2PlaneConfig:
        """A few-thousand-parameter variant for fast tests (use 32x32 or 64x64 inputs)."""
        return cls(
            resnet_blocks=(1, 1, 1, 1),
            resnet_widths=(4, 8, 8, 16),
            aspp_channels=8,
            atrous_rates=(1, 2, 3),
            vit_dim=16,
            vit_heads=2,
            low_res_blocks=1,
            triplane_blocks=1,
            low_res_hidden=8,
            feature_channels=8,
            high_res_stem=8,
            high_res_layers=2,
            triplane_hidden=(8, 8),
            triplane_after_cat=(8, 8, 8),
            plane_channels=4,
        )
