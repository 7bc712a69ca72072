"""Configuration of the whole Real3D-Portrait generator (`real3d.models.real3d_portrait`).

One dataclass composed of the configs of its four networks: Img2Plane (I2P), MotionAdapter (MA), the
tri-plane volume renderer and HTB-SR. Presets: `official()` (the released `secc2plane_torso` sizes) and
`tiny()` (a few-thousand-parameter model for tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from real3d.config.htbsr import HTBSRConfig
from real3d.config.img2plane import Img2PlaneConfig
from real3d.config.motion_adapter import MotionAdapterConfig
from real3d.config.volume_renderer import VolumeRendererConfig

AutocastScope = Literal["frame_convs", "sr", "all"]
"""What runs in reduced precision under `torch.autocast` (a run-time choice; the renderer is float32 always):
`frame_convs` HTB-SR's per-frame part and the motion adapter's plane CNN (most of a frame's FLOPs); `sr` HTB-SR's
per-frame part only; `all` also the motion adapter's SegFormer and the per-source encoders. Errors before the
renderer persist in every frame or are amplified by the density field and importance sampling, so the wider
scopes cost more accuracy (each scope's image error: `benchmarks/bench_real3d_portrait.py`)."""
AUTOCAST_SCOPES: tuple[str, ...] = get_args(AutocastScope)


@dataclass(frozen=True)
class Real3DPortraitConfig:
    """Image + PNCC -> video frame (the official `OSAvatarSECC_Img2plane_Torso`)."""

    img2plane: Img2PlaneConfig = field(default_factory=Img2PlaneConfig)
    """Source image -> canonical tri-plane (paper Sec. 3.1)."""
    motion_adapter: MotionAdapterConfig = field(default_factory=MotionAdapterConfig)
    """(cano, src, tgt) PNCC -> tri-plane residual (paper Sec. 3.2)."""
    renderer: VolumeRendererConfig = field(default_factory=VolumeRendererConfig)
    """Tri-plane volume renderer; its `mode` is the default sampling mode of `forward`."""
    htbsr: HTBSRConfig = field(default_factory=HTBSRConfig)
    """Head-torso-background super-resolution (paper Sec. 3.3)."""
    perturb_init: float = 0.001
    """Initial value of the two training-only `lambda_pertube_*` scalars (stored in the checkpoint)."""

    def __post_init__(self) -> None:
        planes = {
            "img2plane.plane_channels": self.img2plane.plane_channels,
            "motion_adapter.plane_channels": self.motion_adapter.plane_channels,
            "renderer.feature_dim": self.renderer.feature_dim,
            "htbsr.feature_channels": self.htbsr.feature_channels,
        }
        if len(set(planes.values())) != 1:
            raise ValueError(f"the plane/feature channels of the sub-networks must agree, got {planes}")
        if self.renderer.resolution != self.htbsr.input_resolution:
            raise ValueError(
                f"renderer.resolution ({self.renderer.resolution}) must equal htbsr.input_resolution "
                f"({self.htbsr.input_resolution})"
            )

    @staticmethod
    def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
        """Saved configs of older versions carried the run-time precision choice (`autocast_sr_only`, then
        `autocast_scope`); it is dropped: it is set per model instance (`Real3DPortrait(autocast_scope=...)`)."""
        return {k: v for k, v in data.items() if k not in ("autocast_sr_only", "autocast_scope")}

    @property
    def image_resolution(self) -> int:
        """Side of the output frames (4 x the rendering resolution; 512 in the release)."""
        return self.htbsr.output_resolution

    @classmethod
    def official(cls) -> Real3DPortraitConfig:
        """The released `secc2plane_torso` model: 148,019,272 parameters, 512^2 in and out."""
        return cls(
            img2plane=Img2PlaneConfig.official(),
            motion_adapter=MotionAdapterConfig.official(),
            renderer=VolumeRendererConfig.official(),
            htbsr=HTBSRConfig.official(),
        )

    @classmethod
    def tiny(cls) -> Real3DPortraitConfig:
        """Test size: 32x32 images, 8-channel 16x16 planes, 8x8 rays with 4 + 4 samples, SR 8 -> 32."""
        c = 8
        return cls(
            img2plane=replace(Img2PlaneConfig.tiny(), plane_channels=c),
            motion_adapter=replace(MotionAdapterConfig.tiny(), plane_channels=c),
            renderer=replace(VolumeRendererConfig.tiny(), resolution=8, feature_dim=c),
            htbsr=HTBSRConfig.tiny(),
        )
