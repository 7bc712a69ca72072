"""The neural backend: the paper's networks driven by 3DMM expression and head pose.

What `inference/real3d_infer.py` does, from local files only, in bounded memory:

  source  -> framed 512 image, 6-class parsing, head image, inpainted torso, background, 3DMM fit
             -> I2P planes + torso/background features (computed once: `SourceState`)
  driver  -> 64-d BFM expression per frame (A2M on HuBERT + f0 for audio; a 3DMM fit for a video)
             + head pose (static / the video's / a pose video), depth fixed, mapped to the source pose,
             EG3D cameras smoothed over 7 frames, lm68 torso keypoints smoothed over 7 frames
  frames  -> PNCC maps (cano = exp 0, src = first driving exp, tgt), blink painting, the network in
             batches, streamed to the writer.
Sizes: the head image, torso, background, segmentation and all three PNCC maps are made at
`input_image_size(config)` = `config.image_resolution` (4 x the neural rendering resolution: 512 for
the released model, the official SECC size; 32 for `Real3DPortraitConfig.tiny()`), because I2P and MA
each turn their input into planes of half its size and the two planes are summed.
Official facts are in `shared/docs/official-architecture.md` (§1.3); differences on purpose: the
source is framed keeping its aspect ratio, the volume sampling is deterministic by default (no
flicker), per-source features are computed once, and frames stream to the encoder.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from real3d.assets import NeuralAssets
from real3d.audio.pitch import official_f0
from real3d.config.real3d_portrait import AutocastScope
from real3d.cpu_memory import keep_freed_memory
from real3d.errors import CheckpointError
from real3d.face.bfm import BFMFiles, ParametricFace
from real3d.face.blink import blink_schedule, paint_blinks
from real3d.face.fitting import fit_image, fit_video
from real3d.face.parsing import (
    MulticlassSegmenter,
    approximate_parsing,
    head_image,
    inpaint_torso,
    one_hot,
)
from real3d.face.pncc import PNCCRenderer
from real3d.face.portrait import Portrait
from real3d.models.hubert import hubert_features, load_hubert
from real3d.motion.bfm_track import BFMTrack
from real3d.motion.blink import blink_curve
from real3d.motion.cameras import (
    PoseSequence,
    driving_pose,
    smooth_features,
    torso_keypoints,
)
from real3d.motion.driving import SPEECH_RATE, Driving, TrackedVideo
from real3d.motion.neural_audio import MOTION_FPS, a2m_expression
from real3d.precision import resolve_dtype
from real3d.weights.convert import load_checkpoint
from real3d.weights.official import read_config_yaml

log = logging.getLogger(__name__)


@dataclass
class NeuralConfig:
    """Options of the neural backend (official defaults where the official code has one)."""

    batch_size: int = 4
    """Frames per network call."""
    sampling: Literal["deterministic", "stochastic"] = "deterministic"
    """Volume sampling: deterministic (no flicker) or the official random jitter."""
    temperature: float = 0.2
    """A2M prior temperature."""
    map_to_init_pose: bool = True
    """Shift the driving poses so the first frame has the source's pose (official default)."""
    out_mode: Literal["final", "debug"] = "final"
    """`debug` adds PNCC, raw render and depth panels beside the result (like the official concat_debug)."""
    device: str = "cpu"
    """torch device."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Autocast dtype of the networks: auto = bfloat16 where the device computes it natively (AVX512-BF16/AMX
    CPUs, CUDA sm_80+), else float32 (= parity); an explicit type the device only emulates runs with a warning
    (`real3d.precision`)."""
    autocast_scope: AutocastScope = "frame_convs"
    """In reduced precision: which networks run under autocast (`real3d.config.real3d_portrait.AutocastScope`)."""


_OFFICIAL_TASKS = {"generator": "secc_img2plane_torso_task", "a2m": "audio2motion_task"}
"""Module of config.yaml's `task_cls` in each official checkpoint kind."""


def _official_kind(folder: Path) -> str | None:
    """'generator' / 'a2m' from an official folder's config.yaml `task_cls`; None when it does not say."""
    cfg = folder / "config.yaml"
    if not cfg.is_file():
        return None
    try:
        task = read_config_yaml(cfg).get("task_cls", "")
    except (OSError, CheckpointError):  # unreadable: fall back to the folder name
        return None
    return next((k for k, mod in _OFFICIAL_TASKS.items() if isinstance(task, str) and mod in task), None)


def _find_model_dir(root: Path, kind: Literal["generator", "a2m"]) -> Path:
    """The checkpoint folder of one model under the user's --checkpoints folder (official or converted).

    Converted folders are recognised by config.json's `model_type`, official ones by config.yaml's
    `task_cls` (else by the release's folder names), so renamed folders are found too."""
    names = {"generator": ("secc2plane_torso", "torso"), "a2m": ("audio2secc", "a2m", "audio2motion")}[kind]
    model_type = {"generator": "real3d_portrait", "a2m": "audio2motion"}[kind]
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [root]
    for c in candidates:
        cfg = c / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("model_type") == model_type:
                    return c
            except (OSError, ValueError):
                continue
        elif any(c.glob("model_ckpt_steps_*.ckpt")):
            found = _official_kind(c)
            if found == kind or (found is None and (c == root or any(n in c.name for n in names))):
                return c
    raise CheckpointError(
        f"no {kind} checkpoint under {root}: expected the official release's "
        f"{'secc2plane_torso_orig' if kind == 'generator' else 'audio2secc_vae'}/ "
        "(config.yaml + model_ckpt_steps_*.ckpt) "
        f"or a folder made by `real3d convert-official`"
    )


def input_image_size(config) -> int:
    """Side of the images and PNCC maps the generator of `config` (a `Real3DPortraitConfig`) reads.

    I2P (head image) and MA (cano/src/tgt PNCC) both output tri-planes at half their input size and
    the two are added, so they read one size; the model was trained with it equal to the output
    frame size `config.image_resolution` (512 = the official SECC size). I2P needs a multiple of 16."""
    size = int(config.image_resolution)
    if size % 16:
        raise CheckpointError(
            f"the generator's image resolution {size} is not a multiple of 16, which I2P needs; "
            "the checkpoint's neural_rendering_resolution must be a multiple of 4"
        )
    return size


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """[H,W,3] uint8 -> [1,3,H,W] float32 in [-1,1]."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B,3,H,W] in [-1,1] -> [B,H,W,3] uint8."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class SourceState:
    """Everything about the source the frames need (computed once)."""

    cache: object
    fit_id: torch.Tensor
    fit_exp: torch.Tensor
    euler: torch.Tensor
    trans: torch.Tensor
    kp_s: torch.Tensor


class NeuralBackend:
    """The paper's networks behind `real3d.backends.base.Backend`. Loads the user's models once; animates any
    number of sources and drivers."""

    name = "neural"

    def __init__(
        self,
        assets: NeuralAssets,
        config: NeuralConfig | None = None,
        need_audio: bool = True,
        generator_dir: str | Path | None = None,
        a2m_dir: str | Path | None = None,
    ) -> None:
        self.config = config or NeuralConfig()
        self.device = torch.device(self.config.device)
        self.timings: dict[str, float] = {}
        keep_freed_memory()  # the frames' large temporaries: no page faults per allocation (see cpu_memory)
        t = time.perf_counter()
        if generator_dir is None:
            generator_dir = _find_model_dir(assets.checkpoints, "generator")
        self.model = load_checkpoint(Path(generator_dir)).to(self.device)
        self.model.autocast_scope = self.config.autocast_scope
        self.resolution = input_image_size(self.model.config)
        self.a2m = None
        self.hubert = None
        if need_audio:
            self.a2m = load_checkpoint(
                Path(a2m_dir) if a2m_dir is not None else _find_model_dir(assets.checkpoints, "a2m")
            )
            self.hubert = load_hubert(assets.hubert).eval()
        files = BFMFiles.locate(assets.bfm)
        data = files.load_front()
        self.face = ParametricFace(data, files.mp468_index(data.n_vertices))
        left, right = files.eye_faces(data)
        self.pncc = PNCCRenderer(
            data.faces, files.ncc_code(data), np.concatenate([left, right]), image_size=self.resolution
        )
        self.segmenter_model = assets.segmenter_model
        self.timings["load_models"] = time.perf_counter() - t

    # ------------------------------------------------------------------ source
    def prepare(self, portrait: Portrait) -> SourceState:
        """Parsing, head/torso/background images, the source's 3DMM fit and the networks' per-source features."""
        times = {}
        t = time.perf_counter()
        if self.segmenter_model is not None:
            labels = MulticlassSegmenter(self.segmenter_model)(portrait.image)
        else:
            labels = approximate_parsing(portrait.image, portrait.landmarks, portrait.person_mask)
        r = self.resolution

        def fit_px(img: np.ndarray) -> np.ndarray:
            return img if img.shape[0] == r else cv2.resize(img, (r, r), interpolation=cv2.INTER_AREA)

        head = _to_tensor(fit_px(head_image(portrait.image, labels)))
        torso = _to_tensor(fit_px(inpaint_torso(portrait.image, labels)))
        bg = _to_tensor(fit_px(portrait.background))
        if labels.shape[0] != r:
            labels = cv2.resize(labels, (r, r), interpolation=cv2.INTER_NEAREST)
        segmap = torch.from_numpy(one_hot(labels))[None]
        times["parsing"] = time.perf_counter() - t
        t = time.perf_counter()
        fit = fit_image(self.face, portrait.landmarks[:468, :2], portrait.image.shape[:2])
        times["fit_source"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            cache = self.model.encode_source(*(x.to(self.device) for x in (head, torso, bg, segmap)))
        times["encode_source"] = time.perf_counter() - t
        self.timings.update(times)
        lm2d = self.face.reconstruct_lm2d_official(fit.id, fit.exp, fit.euler, fit.trans)
        return SourceState(cache, fit.id, fit.exp, fit.euler, fit.trans, torso_keypoints(lm2d))

    # ------------------------------------------------------------------ motion
    def motion(self, source: SourceState, driving: Driving) -> BFMTrack:
        """BFM expression (A2M for speech, a 3DMM fit of a driving video), head pose (still, the driving or the
        pose video's fit; depth fixed, mapped to the source pose) and the blink painting of every frame."""
        pose = None
        if driving.speech is not None:
            exp25 = self.expression_from_audio(driving.speech, driving.mouth_amp, driving.seed)
            n = max(1, int(round(len(driving.speech) / SPEECH_RATE * driving.fps)))
            idx = np.minimum(np.round(np.arange(n) * MOTION_FPS / driving.fps).astype(np.int64), exp25.shape[0] - 1)
            exp = exp25[torch.from_numpy(idx)]
        else:
            fit = self.fit_video(driving.video.track())
            exp = fit.exp
            pose = PoseSequence(euler=fit.euler, trans=fit.trans)
        if driving.pose is not None:
            pfit = self.fit_video(driving.pose)
            pose = PoseSequence(euler=pfit.euler, trans=pfit.trans)
        if driving.still:
            pose = None
        n = driving.limit(exp.shape[0])
        poses = driving_pose(source.euler, source.trans, n, pose, map_to_init=self.config.map_to_init_pose)
        return BFMTrack(exp[:n], poses, self._blinks(n, driving), seed=driving.seed)

    def _blinks(self, n: int, driving: Driving) -> np.ndarray:
        """[n] eye closure painted into the PNCC: the official schedule (periodic), natural blinks, or none."""
        if driving.blink == "periodic":
            return blink_schedule(n, random.Random(driving.seed))
        if driving.blink == "natural":
            closure = blink_curve(n, driving.fps, "natural", driving.seed).astype(np.float64)
            return np.where(closure > 0, closure, np.nan)
        return np.full(n, np.nan)

    def expression_from_audio(self, wav16k: np.ndarray, mouth_amp: float, seed: int) -> torch.Tensor:
        """[T25,64] expression from speech (HuBERT + f0 -> A2M)."""
        t = time.perf_counter()
        with torch.inference_mode():
            feats = hubert_features(self.hubert, wav16k)
        self.timings["hubert"] = time.perf_counter() - t
        t = time.perf_counter()
        f0 = official_f0(wav16k, feats.shape[0])
        with torch.inference_mode():
            exp = a2m_expression(
                self.a2m, feats, f0, mouth_amp=mouth_amp, temperature=self.config.temperature, seed=seed
            )
        self.timings["a2m"] = time.perf_counter() - t
        return exp

    def fit_video(self, video: TrackedVideo):
        """3DMM fit (exp, euler, trans per frame) of a tracked driving or pose video."""
        t = time.perf_counter()
        fit = fit_video(self.face, video.landmarks[:, :468, :2], video.size)
        self.timings["fit_driver"] = self.timings.get("fit_driver", 0.0) + time.perf_counter() - t
        return fit

    # ------------------------------------------------------------------ frames
    def frame_size(self, source: SourceState) -> tuple[int, int]:
        return self.resolution, self.resolution * (4 if self.config.out_mode == "debug" else 1)

    def frames(self, source: SourceState, motion: BFMTrack) -> Iterator[np.ndarray]:
        """RGB uint8 frames of `motion`, computed `config.batch_size` at a time."""
        n = len(motion)
        ident = source.fit_id
        exp = motion.expression
        cameras = motion.pose.cameras().float()
        lm2d = self.face.reconstruct_lm2d_official(ident.expand(n, -1), exp, motion.pose.euler, motion.pose.trans)
        kp_d = smooth_features(torso_keypoints(lm2d))
        cano_pncc = self._pncc(ident, torch.zeros(1, exp.shape[1]))
        src_pncc = self._pncc(ident, exp[:1])
        gen = torch.Generator(device=self.device).manual_seed(motion.seed)
        b = max(1, self.config.batch_size)
        self.timings.setdefault("pncc", 0.0)
        self.timings.setdefault("networks", 0.0)
        for start in range(0, n, b):
            sl = slice(start, min(n, start + b))
            k = sl.stop - sl.start
            t = time.perf_counter()
            tgt_pncc = paint_blinks(self._pncc(ident.expand(k, -1), exp[sl]), motion.blink[sl])
            self.timings["pncc"] += time.perf_counter() - t
            t = time.perf_counter()
            with torch.inference_mode(), self._autocast():
                out = self.model(
                    source.cache,
                    cano_pncc.expand(k, -1, -1, -1).to(self.device),
                    src_pncc.expand(k, -1, -1, -1).to(self.device),
                    tgt_pncc.to(self.device),
                    cameras[sl].to(self.device),
                    source.kp_s.expand(k, -1, -1).to(self.device),
                    kp_d[sl].to(self.device),
                    mode=self.config.sampling,
                    generator=gen if self.config.sampling == "stochastic" else None,
                )
            self.timings["networks"] += time.perf_counter() - t
            images = _to_uint8(out.image.float())
            if self.config.out_mode == "debug":
                images = self._debug_panels(images, tgt_pncc, out)
            yield from images

    def _pncc(self, ident: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(exp.shape[0], 3)
        verts = self.face.posed_vertices(ident.expand(exp.shape[0], -1), exp, zeros, zeros)
        return self.pncc(verts)

    def _debug_panels(self, images: np.ndarray, tgt_pncc: torch.Tensor, out) -> np.ndarray:
        """[B,H,4W,3]: target PNCC, raw 128 render (upsampled), depth, result."""
        size = images.shape[1]
        raw = F.interpolate(out.image_raw.float(), size=size, mode="bilinear", align_corners=False)
        depth = out.image_depth.float()
        lo, hi = depth.amin(dim=(2, 3), keepdim=True), depth.amax(dim=(2, 3), keepdim=True)
        d = (depth - lo) / (hi - lo + 1e-6)
        depth_img = F.interpolate(d.repeat(1, 3, 1, 1) * 2 - 1, size=size, mode="bilinear", align_corners=False)
        panels = [_to_uint8(tgt_pncc.float()), _to_uint8(raw), _to_uint8(depth_img.cpu()), images]
        return np.concatenate(panels, axis=2)

    def _autocast(self):
        """The autocast context of the networks: `config.dtype` resolved for this device once (auto -> bf16 only
        where native; an emulated explicit request warns once)."""
        dtype = getattr(self, "_resolved_dtype", None)
        if dtype is None:
            dtype = self._resolved_dtype = resolve_dtype(self.config.dtype, self.device)
        if dtype == "float32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype))
