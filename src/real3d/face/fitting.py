"""Landmark fitting of the BFM 3DMM to MediaPipe face-mesh landmarks, for one image or a whole video.

Follows the official Real3D-Portrait fitters (`data_gen/utils/process_image/fit_3dmm_landmark.py` and
`process_video/fit_3dmm_landmark.py` with `id_mode='global'`; facts in `official-architecture.md` §4.4):

* Input: the first 468 MediaPipe landmarks in pixels (x right, y down) of a square H x H frame. They are
  flipped to y up (`y -> H - y`) and rescaled to the 224 px 3DMM frame (`/ (H / 224)`).
* Model: the 468 mapped BFM vertices (`index_mp468_from_mesh35709.npy`), projected with the keypoint bases
  only (`ParametricFace.project_keypoints`, focal 1015, camera distance 10).
* Landmark loss: `mean(w * (proj - gt)^2)` over [T,468,2] (pixels^2 of the 224 frame). Weights:
  image: eye loops 5, inner and outer lip 2, the 8 silhouette points 0, others 1;
  video: eye loops 3, upper eyelids (5 points per eye) 20, lips 5, silhouette 0, others 1.
* Parameters, all initialised to 0: one identity [1,80] shared by all frames; per-frame expression
  [T,64], euler [T,3] and translation [T,3].
* Stage 1: 200 Adam steps (lr 0.1) on euler and translation only, landmark loss only.
  Stage 2: 200 steps on everything: a fresh Adam (lr 0.1) for id/exp, the stage-1 Adam (state kept) for
  euler/trans, loss = landmark + lambda_id mean(id^2) + lambda_exp mean(exp^2) + lambda_lap Lap, with
  Lap = L(id) + L(exp) + 0.3 L(euler) + 0.3 L(trans), L(x) = mean over channels and time of
  ([-0.5, 1, -0.5] * x)^2 with edge-replicated padding in time (L(id) = 0 for the shared id).
  lambda (image): id 0.3, exp 0.05, no Lap. lambda (video): id 0.2, exp 0.6, Lap 1.0.
* The official stage 3 (50 fine steps at lr 0.005 per batch) writes its result into a temporary copy
  (`param[sel_ids].data = ...` on an advanced-indexing copy), so the released output is the stage-2
  result. It is therefore not run here: the output equals the official output.

All frames are optimised together as one batch (no per-frame Python loop). An image is a 1-frame video
with the image weights (its Laplacian term is identically 0).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from real3d.errors import InputError
from real3d.face import topology as topo
from real3d.face.bfm import N_EXP, N_ID, ParametricFace

log = logging.getLogger(__name__)

SILHOUETTE = (93, 127, 132, 234, 323, 356, 361, 454)
"""MediaPipe points with no BFM counterpart (-999 in the official index); weight 0."""
EYES = topo.RIGHT_EYE_LOOP + topo.LEFT_EYE_LOOP
UPPER_EYELIDS = topo.RIGHT_EYE_UPPER[1:-1] + topo.LEFT_EYE_UPPER[1:-1]
LIPS = topo.INNER_LIP_LOOP + topo.OUTER_LIP_UPPER + topo.OUTER_LIP_LOWER


@dataclass(frozen=True)
class LandmarkFitConfig:
    """Losses and schedule of the landmark fit (defaults: the official video fitter)."""

    stage1_iters: int = 200
    """Adam steps on euler/translation only."""
    stage2_iters: int = 200
    """Adam steps on all parameters with the regularisers."""
    lr: float = 0.1
    """Adam learning rate of both stages."""
    lambda_id: float = 0.2
    """Weight of mean(id^2)."""
    lambda_exp: float = 0.6
    """Weight of mean(exp^2)."""
    lambda_lap: float = 1.0
    """Weight of the temporal Laplacian term (0 disables it)."""
    lap_pose_weight: float = 0.3
    """Weight of the euler and translation Laplacians inside the Laplacian term."""
    eye_weight: float = 3.0
    """Landmark weight of the two eye loops."""
    upper_eyelid_weight: float = 20.0
    """Landmark weight of the upper eyelids (overrides eye_weight there); set equal to eye_weight for none."""
    lip_weight: float = 5.0
    """Landmark weight of the inner and outer lip loops."""
    silhouette_weight: float = 0.0
    """Landmark weight of the 8 face-oval points the BFM has no vertex for."""
    device: str = "cpu"
    """Torch device of the optimisation ('cuda' to run on the GPU)."""
    num_threads: int | None = None
    """CPU threads during the fit; None: 1 (the per-step ops are small, so more threads only add hand-off
    overhead)."""


VIDEO_FIT = LandmarkFitConfig()
"""The official video fitter (`id_mode='global'`)."""
IMAGE_FIT = LandmarkFitConfig(
    lambda_id=0.3, lambda_exp=0.05, lambda_lap=0.0, eye_weight=5.0, upper_eyelid_weight=5.0, lip_weight=2.0
)
"""The official image fitter."""


@dataclass
class LandmarkFit:
    """3DMM coefficients from a landmark fit (CPU float32 tensors)."""

    id: torch.Tensor
    """[1,80] identity, shared by all frames."""
    exp: torch.Tensor
    """[T,64] expression per frame."""
    euler: torch.Tensor
    """[T,3] (pitch, yaw, roll) radians per frame."""
    trans: torch.Tensor
    """[T,3] translation per frame (BFM decimetres)."""
    landmark_rmse: float
    """RMSE in pixels of the 224 frame over the weighted (non-silhouette) landmarks."""
    seconds: float
    """Wall time of the optimisation."""

    @property
    def num_frames(self) -> int:
        return self.exp.shape[0]


def landmark_weights(config: LandmarkFitConfig) -> torch.Tensor:
    """[468] per-landmark weights of the landmark loss (applied to x and y alike)."""
    w = torch.ones(468)
    w[list(EYES)] = config.eye_weight
    w[list(UPPER_EYELIDS)] = config.upper_eyelid_weight
    w[list(LIPS)] = config.lip_weight
    w[list(SILHOUETTE)] = config.silhouette_weight
    return w


def to_fit_frame(
    landmarks: np.ndarray | torch.Tensor, image_size: int | tuple[int, int], fit_size: float = 224.0
) -> torch.Tensor:
    """[T,>=468,>=2] pixel landmarks (x right, y down) of a square frame -> [T,468,2] float32 in the 224 frame
    with y up (`y -> H - y`, then `/ (H / 224)`)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h != w or h <= 0:
        raise InputError(
            f"landmark fitting needs a square frame (the official fitter asserts H == W); got {h}x{w}. "
            f"Crop or resize the frames to a square first"
        )
    lm = torch.as_tensor(np.asarray(landmarks, dtype=np.float32))
    if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] < 2 or lm.shape[0] == 0:
        raise InputError(f"expected landmarks [T,>=468,>=2] (MediaPipe face mesh), got {tuple(lm.shape)}")
    if not torch.isfinite(lm[:, :468, :2]).all():
        raise InputError("landmarks contain NaN or infinite values (a frame without a detected face?)")
    xy = lm[:, :468, :2].clone()
    xy[..., 1] = h - xy[..., 1]
    return xy / (h / fit_size)


def laplacian_loss(x: torch.Tensor) -> torch.Tensor:
    """x [T,C] -> mean over C and T of ([-0.5,1,-0.5] along T)^2, edges replicated."""
    xp = torch.cat([x[:1], x, x[-1:]], 0)  # (T+2) x C
    return ((xp[1:-1] - 0.5 * (xp[:-2] + xp[2:])) ** 2).mean()


def fit_landmarks(face: ParametricFace, target: torch.Tensor, config: LandmarkFitConfig = VIDEO_FIT) -> LandmarkFit:
    """Fit to landmarks already in the 224 frame, y up: target [T,468,2] (see `to_fit_frame`)."""
    threads = config.num_threads
    if threads is None:  # the per-step tensors are tiny: thread hand-offs cost more than they save
        threads = 1 if torch.device(config.device).type == "cpu" else torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(face, target, config)
    finally:
        torch.set_num_threads(before)


def _fit(face: ParametricFace, target: torch.Tensor, config: LandmarkFitConfig) -> LandmarkFit:
    if "mp468" not in face.keypoint_ids:
        raise InputError(
            "the face model has no mediapipe keypoints; load it with the "
            "index_mp468_from_mesh35709.npy file (ParametricFace.from_dir(..., with_mediapipe=True))"
        )
    if target.ndim != 3 or target.shape[1:] != (468, 2):
        raise InputError(f"target must be [T,468,2], got {tuple(target.shape)}")
    start = time.perf_counter()
    dev = torch.device(config.device)
    t = target.shape[0]
    target = target.to(dev, torch.float32)
    mean, id_base, exp_base = (
        getattr(face, f"mp468_{k}").to(dev, torch.float32) for k in ("mean", "id_base", "exp_base")
    )  # [468,3], [468,3,80], [468,3,64]
    weights = landmark_weights(config).to(dev)[None, :, None]  # 1 x 468 x 1

    id_para = torch.zeros(1, N_ID, device=dev)
    exp_para = torch.zeros(t, N_EXP, device=dev)
    euler = torch.zeros(t, 3, device=dev, requires_grad=True)
    trans = torch.zeros(t, 3, device=dev, requires_grad=True)

    def landmark_loss(pts: torch.Tensor | None = None) -> torch.Tensor:
        if pts is None:
            pts = face.linear_shape(mean, id_base, exp_base, id_para.expand(t, -1), exp_para)  # T x 468 x 3
        proj = face.project(face.to_camera(pts, euler, trans))  # T x 468 x 2
        return (weights * (proj - target) ** 2).mean()

    opt_frame = torch.optim.Adam([euler, trans], lr=config.lr)
    rest = face.linear_shape(mean, id_base, exp_base, id_para.expand(t, -1), exp_para)  # constant in stage 1
    for _ in range(config.stage1_iters):
        loss = landmark_loss(rest)
        opt_frame.zero_grad()
        loss.backward()
        opt_frame.step()

    id_para.requires_grad_(True)
    exp_para.requires_grad_(True)
    opt_idexp = torch.optim.Adam([id_para, exp_para], lr=config.lr)
    for _ in range(config.stage2_iters):
        loss = landmark_loss() + config.lambda_id * (id_para**2).mean() + config.lambda_exp * (exp_para**2).mean()
        if config.lambda_lap:
            lap = laplacian_loss(exp_para) + config.lap_pose_weight * (laplacian_loss(euler) + laplacian_loss(trans))
            loss = loss + config.lambda_lap * lap  # the shared id's Laplacian is identically 0
        opt_idexp.zero_grad()
        opt_frame.zero_grad()
        loss.backward()
        opt_idexp.step()
        opt_frame.step()

    with torch.no_grad():
        pts = face.linear_shape(mean, id_base, exp_base, id_para.expand(t, -1), exp_para)
        err = ((face.project(face.to_camera(pts, euler, trans)) - target) ** 2).sum(-1)  # T x 468
        rmse = float(err[:, weights[0, :, 0] > 0].mean().sqrt())
    out = LandmarkFit(
        id=id_para.detach().cpu(),
        exp=exp_para.detach().cpu(),
        euler=euler.detach().cpu(),
        trans=trans.detach().cpu(),
        landmark_rmse=rmse,
        seconds=time.perf_counter() - start,
    )
    log.info("3DMM landmark fit: %d frame(s), RMSE %.3f px @224, %.2f s", t, rmse, out.seconds)
    return out


def fit_image(
    face: ParametricFace,
    landmarks: np.ndarray | torch.Tensor,
    image_size: int | tuple[int, int],
    config: LandmarkFitConfig = IMAGE_FIT,
) -> LandmarkFit:
    """Fit one image: landmarks [>=468,>=2] (or [1,>=468,>=2]) pixels, y down, of a square frame."""
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[0] != 1:
        raise InputError(f"fit_image takes the landmarks of one face [468,2], got {lm.shape}; use fit_video for frames")
    return fit_landmarks(face, to_fit_frame(lm, image_size), config)


def fit_video(
    face: ParametricFace,
    landmarks: np.ndarray | torch.Tensor,
    image_size: int | tuple[int, int],
    config: LandmarkFitConfig = VIDEO_FIT,
) -> LandmarkFit:
    """Fit a video: landmarks [T,>=468,>=2] pixels, y down, of square frames; one shared identity."""
    return fit_landmarks(face, to_fit_frame(landmarks, image_size), config)
