"""Real3D-Portrait: source image + PNCC maps + camera -> video frame (Ye et al., ICLR 2024, Sec. 3, Fig. 2).

The released generator `OSAvatarSECC_Img2plane_Torso` as one module, composed of the paper's networks:

    cano   = Img2Plane(img)                                 # Sec. 3.1, once per source
    planes = cano + MotionAdapter(pncc_cano, pncc_src, pncc_tgt)        # Sec. 3.2 ("add" fusion)
    feat, depth, alpha = VolumeRenderer(planes, camera)     # EG3D tri-plane rendering at 128^2
    image  = HTBSR(feat, alpha, torso, background, kp_s, kp_d)          # Sec. 3.3, Eq. 5, -> 512^2

Per-identity caching (the official code recomputes the last two every frame): `encode_source` computes
the canonical planes and HTB-SR's torso appearance volume and background features once; `forward`
takes that `SourceCache` and a batch of B frames (driving PNCCs, cameras, landmarks) that share it.

Children and parameters carry the official names, so `state_dict()` has exactly the 1030 keys (same
order) of the released checkpoint's `state_dict['model']`: the two training-only `lambda_pertube_*`
scalars, `decoder.*` (the tri-plane MLP; the renderer itself has no weights), `cano_img2plane_backbone.*`,
`secc_img2plane_backbone.*` and `superresolution.*`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from real3d.config.real3d_portrait import (
    AUTOCAST_SCOPES,
    AutocastScope,
    Real3DPortraitConfig,
)
from real3d.config.volume_renderer import SamplingMode, VolumeRendererConfig
from real3d.errors import CheckpointError, InputError
from real3d.models.htbsr import HTBSR, HTBSRSource
from real3d.models.img2plane import Img2Plane
from real3d.models.motion_adapter import MotionAdapter
from real3d.models.volume_renderer import (
    DEFAULT_CHUNK_RAYS,
    TriplaneDecoder,
    VolumeRenderer,
    VolumeRenderOutput,
)

OFFICIAL_PREFIXES = ("decoder.", "cano_img2plane_backbone.", "secc_img2plane_backbone.", "superresolution.")
OFFICIAL_SCALARS = ("lambda_pertube_blink_secc", "lambda_pertube_secc")


@dataclass
class SourceCache:
    """Everything that depends only on the source portrait (from `Real3DPortrait.encode_source`)."""

    cano_planes: torch.Tensor
    """[B,3,C,Hp,Wp] canonical tri-plane of the head image (I2P)."""
    htbsr: HTBSRSource
    """Torso appearance volume and background features of HTB-SR."""

    @property
    def batch(self) -> int:
        return self.cano_planes.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SourceCache:
        """A copy on another device / in another floating dtype."""

        def move(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(device=device, dtype=dtype if x.is_floating_point() else None)
            if dataclasses.is_dataclass(x):
                return type(x)(**{f.name: move(getattr(x, f.name)) for f in dataclasses.fields(x)})
            return x

        return move(self)


@dataclass
class Real3DPortraitOutput:
    """One batch of frames. The intermediates are None unless `return_intermediates=True`."""

    image: torch.Tensor
    """[B,3,512,512] final frame in [-1,1]."""
    image_raw: torch.Tensor
    """[B,3,128,128] volume-rendered RGB clamped to [-1,1]."""
    image_depth: torch.Tensor
    """[B,1,128,128] expected ray depth."""
    opacity: torch.Tensor
    """[B,1,128,128] accumulated opacity (head alpha; the official `weights_img`)."""
    occlusion: torch.Tensor
    """[B,1,64,64] torso motion-estimator occlusion (unused by the fusion)."""
    occlusion_2: torch.Tensor
    """[B,1,256,256] torso alpha."""
    cano_planes: torch.Tensor | None = None
    """[B,3,C,256,256] canonical planes (I2P), broadcast over the frames."""
    motion_planes: torch.Tensor | None = None
    """[B,3,C,256,256] motion-adapter planes (the official `secc_planes`)."""
    feature_image: torch.Tensor | None = None
    """[B,C,128,128] rendered features before any clamp."""
    depths_coarse: torch.Tensor | None = None
    """[B,R,Sc] stratified depths per ray (ray r = row * 128 + col)."""
    depths_fine: torch.Tensor | None = None
    """[B,R,Sf] importance depths per ray, before merging."""
    sr_block0_rgb: torch.Tensor | None = None
    """[B,3,256,256] RGB after SR block0."""
    torso_appearance_feats: torch.Tensor | None = None
    """[B,32,16,64,64] torso appearance volume before the mask."""
    torso_deformation: torch.Tensor | None = None
    """[B,16,64,64,3] torso motion field."""
    torso_occlusion_2_pre: torch.Tensor | None = None
    """[B,1,64,64] torso alpha before refinement."""
    torso_rgb: torch.Tensor | None = None
    """[B,3,256,256] warped torso RGB."""
    deformed_torso_hid: torch.Tensor | None = None
    """[B,64,256,256] torso generator hidden features."""
    sr_head_torso_block_rgb: torch.Tensor | None = None
    """[B,3,256,256] RGB after the head/torso fusion block."""
    sr_block1_in_rgb: torch.Tensor | None = None
    """[B,3,256,256] RGB after the background blend."""


def _renderer_with(
    decoder: TriplaneDecoder, config: VolumeRendererConfig, mode: SamplingMode, chunk_rays: int
) -> VolumeRenderer:
    """A `VolumeRenderer` whose decoder is `decoder` (shared; the renderer owns no weights of its own)."""
    renderer = VolumeRenderer(config, mode=mode, chunk_rays=chunk_rays)
    renderer.decoder = decoder
    return renderer


class Real3DPortrait(nn.Module):
    """The released one-shot talking-portrait generator (official `OSAvatarSECC_Img2plane_Torso`)."""

    model_type = "real3d_portrait"

    def __init__(
        self,
        config: Real3DPortraitConfig | None = None,
        *,
        autocast_scope: AutocastScope = "frame_convs",
        chunk_rays: int = DEFAULT_CHUNK_RAYS,
    ) -> None:
        """`config` is the architecture (saved with the weights); `autocast_scope` (what runs in reduced precision
        under `torch.autocast`, see `AutocastScope`) and `chunk_rays` are run-time settings of this instance."""
        super().__init__()
        if autocast_scope not in AUTOCAST_SCOPES:
            raise ValueError(f"autocast_scope must be one of {AUTOCAST_SCOPES}, got {autocast_scope!r}")
        self.autocast_scope: AutocastScope = autocast_scope
        self.config = cfg = config or Real3DPortraitConfig.official()
        init = torch.full((1,), cfg.perturb_init)
        self.lambda_pertube_blink_secc = nn.Parameter(init.clone(), requires_grad=False)  # training only
        self.lambda_pertube_secc = nn.Parameter(init.clone(), requires_grad=False)  # training only
        r = cfg.renderer
        self.decoder = TriplaneDecoder(r.feature_dim, r.decoder_hidden_dim, r.decoder_lr_multiplier)
        self.cano_img2plane_backbone = Img2Plane(cfg.img2plane)
        self.secc_img2plane_backbone = MotionAdapter(cfg.motion_adapter)
        self.superresolution = HTBSR(cfg.htbsr)
        # Not child modules (a plain dict): both share `self.decoder`, whose keys stay `decoder.*` as released.
        self._renderers = {m: _renderer_with(self.decoder, r, m, chunk_rays) for m in ("deterministic", "stochastic")}

    def _precision(self, part: str, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast off (float32) for `part` ("source", "ma_encoder", "ma_cnn") unless `autocast_scope` lets it
        follow autocast; HTB-SR's per-frame part always follows it."""
        follows = {"all": ("source", "ma_encoder", "ma_cnn"), "frame_convs": ("ma_cnn",), "sr": ()}
        if part in follows[self.autocast_scope]:
            return contextlib.nullcontext()
        return torch.autocast(device.type, enabled=False)

    # ------------------------------------------------------------------------------------ per source
    def encode_source(
        self, img: torch.Tensor, ref_torso_img: torch.Tensor, bg_img: torch.Tensor, segmap: torch.Tensor
    ) -> SourceCache:
        """The per-identity work, done once per source portrait.

        img: [B,3,512,512] head-only image in [-1,1] (-1 outside hair/face/others);
        ref_torso_img: [B,3,512,512] neck + clothes in [-1,1], -1 elsewhere; bg_img: [B,3,512,512];
        segmap: [B,6,512,512] one-hot (any dtype; 0 bg, 1 hair, 2 neck, 3 face, 4 clothes, 5 others).
        """
        b = img.shape[0]
        for name, t in (("ref_torso_img", ref_torso_img), ("bg_img", bg_img), ("segmap", segmap)):
            if t.shape[0] != b:
                raise InputError(f"{name} has batch {t.shape[0]} but img has batch {b}; give one of each per source")
        with self._precision("source", img.device):
            cano = self.cano_img2plane_backbone(img)  # Bx3xCxHpxWp
            htbsr = self.superresolution.encode_source(ref_torso_img, bg_img, segmap.to(img.dtype))
        return SourceCache(cano, htbsr)

    # ------------------------------------------------------------------------------------ per frame
    def forward(
        self,
        cache: SourceCache,
        cond_cano: torch.Tensor,
        cond_src: torch.Tensor,
        cond_tgt: torch.Tensor,
        camera: torch.Tensor,
        kp_s: torch.Tensor,
        kp_d: torch.Tensor,
        mode: SamplingMode = "deterministic",
        generator: torch.Generator | None = None,
        return_intermediates: bool = False,
    ) -> Real3DPortraitOutput:
        """Render B frames of one source.

        cache: from `encode_source`, batch 1 (broadcast) or B; cond_cano/src/tgt: [B,3,512,512] PNCC
        maps (frontal, background -1); camera: [B,25] EG3D camera (c2w 16 + normalised K 9);
        kp_s, kp_d: [B,68,3] source / driving lm68 landmarks, xy in [-1,1], z = 0.
        mode: volume sampling (`deterministic`, the default, or `stochastic` as released;
        `generator` seeds the latter).
        Reduced precision: keep the weights float32 and run under `torch.autocast`: HTB-SR's convs and
        matmuls run in bf16/fp16, and by `autocast_scope` the motion adapter's plane CNN (default),
        its SegFormer and the source encoders; the volume rendering is always float32.
        """
        b = cond_tgt.shape[0]
        if cache.batch not in (1, b):
            raise InputError(
                f"the source cache has batch {cache.batch} but {b} frames were given; "
                "use a batch-1 cache (shared by all frames) or one source per frame"
            )
        for name, t in (
            ("cond_cano", cond_cano),
            ("cond_src", cond_src),
            ("camera", camera),
            ("kp_s", kp_s),
            ("kp_d", kp_d),
        ):
            if t.shape[0] != b:
                raise InputError(f"{name} has batch {t.shape[0]} but cond_tgt has batch {b}")
        if mode not in self._renderers:
            raise InputError(f"mode must be 'deterministic' or 'stochastic', got {mode!r}")

        diff_planes = self.motion_planes(cond_cano, cond_src, cond_tgt)  # Bx3xCxHpxWp
        rendered = self.render(cache.cano_planes, diff_planes, camera, mode, generator)
        feat = rendered.feature_image  # BxCx128x128
        sr = self.superresolution(feat[:, :3], feat, rendered.opacity, kp_s, kp_d, cache=cache.htbsr)
        out = Real3DPortraitOutput(
            image=sr.image,
            image_raw=rendered.image_raw,
            image_depth=rendered.depth,
            opacity=rendered.opacity,
            occlusion=sr.occlusion,
            occlusion_2=sr.occlusion_2,
        )
        if return_intermediates:
            out.cano_planes = cache.cano_planes.expand_as(diff_planes)
            out.motion_planes = diff_planes
            out.feature_image = feat
            out.depths_coarse = rendered.depths_coarse
            out.depths_fine = rendered.depths_fine
            for name in (
                "sr_block0_rgb",
                "torso_appearance_feats",
                "torso_deformation",
                "torso_occlusion_2_pre",
                "torso_rgb",
                "deformed_torso_hid",
                "sr_head_torso_block_rgb",
                "sr_block1_in_rgb",
            ):
                setattr(out, name, getattr(sr, name))
        return out

    def motion_planes(self, cond_cano: torch.Tensor, cond_src: torch.Tensor, cond_tgt: torch.Tensor) -> torch.Tensor:
        """The motion adapter's tri-plane residual [B,3,C,Hp,Wp] from the three PNCC maps, its SegFormer and
        its plane CNN each at the precision `autocast_scope` gives them."""
        motion = self.secc_img2plane_backbone
        with self._precision("ma_encoder", cond_tgt.device):
            fused = motion.encode(cond_cano, cond_src, cond_tgt)  # BxDxH/4xW/4
        with self._precision("ma_cnn", cond_tgt.device):
            return motion.decode(fused)

    def render(
        self,
        cano_planes: torch.Tensor,
        motion_planes: torch.Tensor,
        camera: torch.Tensor,
        mode: SamplingMode,
        generator: torch.Generator | None = None,
    ) -> VolumeRenderOutput:
        """Volume-render cano + secc planes (official phase1_plane_fusion_mode = add) seen from `camera`.

        Runs in float32 even under autocast: bf16 rays and sample positions would misplace samples by up
        to a plane pixel, and its one matmul-heavy part (the 4k-parameter decoder MLP) is ~1% of the
        frame's FLOPs."""
        planes = cano_planes.float() + motion_planes.float()
        with torch.autocast(planes.device.type, enabled=False):
            return self._renderers[mode](planes, camera.float(), generator)


# ---------------------------------------------------------------------------------- official checkpoints
def remap_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `secc2plane_torso` state dict (`ckpt['state_dict']['model']`) -> `Real3DPortrait`'s.

    The keys already match one-to-one; this checks that the tensors of every part are present (so a
    wrong checkpoint fails with a clear message) and passes everything through for the strict load.
    """
    absent = [p + "*" for p in OFFICIAL_PREFIXES if not any(k.startswith(p) for k in state_dict)]
    absent += [k for k in OFFICIAL_SCALARS if k not in state_dict]
    if absent:
        raise CheckpointError(
            f"the state dict lacks {', '.join(absent)}; pass ckpt['state_dict']['model'] of the official "
            "secc2plane_torso checkpoint (the head-only secc2plane model has no superresolution torso branch)"
        )
    return dict(state_dict)
