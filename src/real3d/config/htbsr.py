"""Configuration of HTB-SR (`real3d.models.htbsr`) and its warping torso branch (`real3d.models.torso_warp`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NoiseMode = Literal["none", "const", "random"]


@dataclass(frozen=True)
class TorsoWarpConfig:
    """face-vid2vid-style 3-D warping torso network (Real3D-Portrait Sec. 3.3, HTB-SR torso branch)."""

    resolution: int = 256
    """Side of the torso image it reads and of the torso RGB / hidden features it writes."""
    in_channels: int = 5
    """Input channels: torso RGB (3) plus the neck and clothes segmentation channels (2), i.e. `rgb_alpha`."""
    appearance_channels: tuple[int, ...] = (64, 128, 256)
    """Widths of the appearance encoder: the 7x7 input conv, then one 2x-downsampling block per further entry."""
    feature_channels: int = 32
    """Channels C of the 3-D appearance volume [C, D, h, w]."""
    feature_depth: int = 16
    """Depth D of the 3-D appearance volume."""
    appearance_res_blocks: int = 6
    """3-D residual blocks on the appearance volume."""
    keypoint_indices: tuple[int, ...] = (0, 8, 16, 27)
    """lm68 landmarks that drive the torso (jaw ends, chin, nose bridge); rotations are the identity."""
    kp_variance: float = 0.01
    """Variance of the 3-D Gaussian keypoint heatmaps, in [-1, 1] grid units."""
    compressed_channels: int = 4
    """Channels the 1x1x1 `compress` conv reduces the motion-estimator input to."""
    hourglass_channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    """Encoder widths of the motion-estimator hourglass (each halves h and w); the decoder mirrors them."""
    hourglass_out_channels: int = 32
    """Width of the last hourglass decoder block."""
    head_channels: int = 32
    """Width of the target-head encoder and of the fused motion features."""
    head_res_blocks: int = 3
    """2-D residual blocks of the target-head encoder."""
    generator_channels: tuple[int, ...] = (256, 128, 64)
    """Generator widths: the 3x3 input conv, then one 2x-upsampling block per further entry."""
    generator_res_blocks: int = 6
    """Spectral-norm 2-D residual blocks of the generator."""
    occlusion_hidden: int = 32
    """Width of the occlusion-2 refining predictor."""
    mask_dilate_ksize: int = 7
    """Max-pool dilation of the torso mask that multiplies the appearance volume."""
    grad_scale: float = 0.1
    """Gradient scale of the motion field and occlusions (`s*x + (1-s)*x.detach()`, identity forward)."""

    def __post_init__(self) -> None:
        downs = len(self.appearance_channels) - 1
        ups = len(self.generator_channels) - 1
        if downs != ups:
            raise ValueError(
                f"the generator must upsample as often as the appearance encoder downsamples "
                f"(got {ups} up vs {downs} down blocks)"
            )
        feat = self.resolution >> downs
        if feat << downs != self.resolution or self.resolution % 2:
            raise ValueError(f"resolution {self.resolution} must be even and divisible by 2**{downs}")
        if feat % (1 << len(self.hourglass_channels)):
            raise ValueError(
                f"feature resolution {feat} must be divisible by 2**{len(self.hourglass_channels)} (hourglass depth)"
            )
        if not self.keypoint_indices:
            raise ValueError("keypoint_indices must not be empty")

    @property
    def feature_resolution(self) -> int:
        """Side of the appearance volume and of the motion field (resolution / 2**downs)."""
        return self.resolution >> (len(self.appearance_channels) - 1)

    @property
    def num_keypoints(self) -> int:
        """Number of driving keypoints K."""
        return len(self.keypoint_indices)

    @classmethod
    def official(cls) -> TorsoWarpConfig:
        """Sizes of the released `secc2plane_torso` torso model (`model2.WarpBasedTorsoModelMediaPipe('standard')`)."""
        return cls()

    @classmethod
    def tiny(cls) -> TorsoWarpConfig:
        """Test size: 16x16 torso image, 4x4x4 volume of 4 channels, a 2-level hourglass."""
        return cls(
            resolution=16,
            appearance_channels=(8, 16, 16),
            feature_channels=4,
            feature_depth=4,
            appearance_res_blocks=1,
            hourglass_channels=(8, 16),
            hourglass_out_channels=8,
            head_channels=8,
            head_res_blocks=1,
            generator_channels=(16, 8, 8),
            generator_res_blocks=1,
            occlusion_hidden=8,
            mask_dilate_ksize=3,
        )


@dataclass(frozen=True)
class HTBSRConfig:
    """Head-torso-background super-resolution (paper Sec. 3.3, Eq. 5): 128 -> 256 -> 512 StyleGAN2 blocks."""

    input_resolution: int = 128
    """Side of the volume-rendered input; the fusion runs at 2x and the output is 4x this."""
    feature_channels: int = 32
    """Channels of the rendered feature image (its first 3 are the raw RGB)."""
    block0_channels: int = 256
    """Width of the 2x block, the head/torso block and every fused feature map."""
    block1_channels: int = 128
    """Width of the final 4x block."""
    w_dim: int = 512
    """Style-vector size; the released model always feeds w = ones."""
    head_threshold: float = 0.9
    """Head opacity above which the head counts as fully opaque in the person mask (`htbsr_head_threshold`)."""
    antialias: bool = True
    """Antialiased bilinear resizes of the SR inputs (the released model uses them)."""
    noise_mode: NoiseMode = "none"
    """Per-pixel noise of the StyleGAN2 layers; the released inference uses `none`."""
    bg_hidden: int = 64
    """Width of the first background-encoder conv."""
    fuse_hidden: int = 64
    """Width of the 1x1 conv that starts the foreground/background fusion."""
    alpha_hidden: int = 32
    """Width of the stored but unused `head_torso_alpha_predictor` (v3 fusion)."""
    torso: TorsoWarpConfig = field(default_factory=TorsoWarpConfig)
    """The warping torso branch; its resolution must be 2 * input_resolution."""

    def __post_init__(self) -> None:
        if self.torso.resolution != 2 * self.input_resolution:
            raise ValueError(
                f"torso.resolution ({self.torso.resolution}) must be 2 * input_resolution ({self.input_resolution})"
            )
        if self.noise_mode not in ("none", "const", "random"):
            raise ValueError(f"noise_mode must be 'none', 'const' or 'random', got {self.noise_mode!r}")
        if not 0.0 <= self.head_threshold <= 1.0:
            raise ValueError(f"head_threshold must lie in [0, 1], got {self.head_threshold}")

    @property
    def mid_resolution(self) -> int:
        """Resolution of the head/torso/background fusion (256 in the release)."""
        return 2 * self.input_resolution

    @property
    def output_resolution(self) -> int:
        """Resolution of the final image (512 in the release)."""
        return 4 * self.input_resolution

    @classmethod
    def official(cls) -> HTBSRConfig:
        """Sizes of the released `secc2plane_torso` super-resolution (`SuperresolutionHybrid8XDC_Warp`, v2 fusion)."""
        return cls(torso=TorsoWarpConfig.official())

    @classmethod
    def tiny(cls) -> HTBSRConfig:
        """Test size: 8 -> 16 -> 32 pixels, 8-16 channels."""
        return cls(
            input_resolution=8,
            feature_channels=8,
            block0_channels=16,
            block1_channels=8,
            w_dim=8,
            bg_hidden=8,
            fuse_hidden=8,
            alpha_hidden=8,
            torso=TorsoWarpConfig.tiny(),
        )
