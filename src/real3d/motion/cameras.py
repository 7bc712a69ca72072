"""Head pose -> EG3D cameras and torso keypoints for the neural backend (official steps 8, 9 and 13).

Order of the official `prepare_batch_from_inp` / `forward_secc2video`:

1. pose per frame: `static` repeats the source's fitted pose; a pose video/npy is indexed with
   `mirror_indices` (official `mirror_index`: forward, backward, ... repeating the end frames);
2. depth fixed to the first frame: trans[:, 2] = trans[0, 2];
3. `map_to_init_pose` (default on): euler += src_euler - euler[0], trans += src_trans - trans[0]
   (additive on Euler angles, not a rotation composition), after step 2;
4. camera = `camera_from_pose` (EG3D c2w | K, `real3d.models.volume_renderer`), then
   `smooth_cameras(k=7)`: per frame the mean translation and the chordal L2 rotation mean
   (scipy `Rotation.mean`) over frames [i-3, i+3] truncated at the clip ends; K is kept;
5. torso keypoints: clamp((lm2d - 0.5)/0.5, -1, 1) with a z = 0 column, driving ones smoothed with
   `smooth_features(k=7)` (official `smooth_features_xd`: moving average, the clip mirrored at its
   ends including the end frame, i.e. numpy 'symmetric' padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from scipy.spatial.transform import Rotation

from real3d.errors import InputError
from real3d.geometry import camera_from_pose
from real3d.motion.track import ping_pong_indices

SMOOTH_KERNEL = 7
"""Official window of the camera and torso-keypoint smoothing (frames)."""

Indexing = Literal["mirror", "ping_pong"]


@dataclass(frozen=True)
class PoseSequence:
    """Per-frame 3DMM head pose of the driving clip."""

    euler: torch.Tensor
    """[T,3] (pitch, yaw, roll) radians."""
    trans: torch.Tensor
    """[T,3] 3DMM translation."""

    def __post_init__(self) -> None:
        if self.euler.ndim != 2 or self.euler.shape[1] != 3 or self.trans.shape != self.euler.shape:
            raise InputError(
                f"PoseSequence: euler and trans must both be [T,3], got {tuple(self.euler.shape)}, "
                f"{tuple(self.trans.shape)}"
            )

    def __len__(self) -> int:
        return self.euler.shape[0]

    def cameras(self, smooth_kernel: int = SMOOTH_KERNEL) -> torch.Tensor:
        """EG3D cameras [T,25] of the poses, smoothed over `smooth_kernel` frames (1 = no smoothing)."""
        return smooth_cameras(camera_from_pose(self.euler, self.trans), smooth_kernel)


def _as_pose(euler: torch.Tensor | np.ndarray, trans: torch.Tensor | np.ndarray) -> PoseSequence:
    e = torch.as_tensor(np.asarray(euler) if not isinstance(euler, torch.Tensor) else euler)
    t = torch.as_tensor(np.asarray(trans) if not isinstance(trans, torch.Tensor) else trans)
    return PoseSequence(euler=e.reshape(-1, 3), trans=t.reshape(-1, 3))


def mirror_indices(n: int, length: int) -> np.ndarray:
    """Official `mirror_index` for frames 0..n-1: 0..L-1, L-1..0, 0..L-1, ... (ends repeated)."""
    if length <= 0:
        raise InputError("mirror_indices: the pose sequence is empty; give a pose video or npy with frames")
    i = np.arange(n)
    turn, res = np.divmod(i, length)
    return np.where(turn % 2 == 0, res, length - res - 1).astype(np.int64)


def static_pose(src_euler: torch.Tensor, src_trans: torch.Tensor, n_frames: int) -> PoseSequence:
    """`--drv_pose static`: the source pose [1,3] / [3] repeated over n_frames."""
    src = _as_pose(src_euler, src_trans)
    if len(src) != 1:
        raise InputError(f"static_pose: expected one source pose, got {len(src)}")
    return PoseSequence(euler=src.euler.repeat(n_frames, 1), trans=src.trans.repeat(n_frames, 1))


def pose_from_sequence(
    euler: torch.Tensor, trans: torch.Tensor, n_frames: int, indexing: Indexing = "mirror"
) -> PoseSequence:
    """Pose of n_frames output frames from a pose clip [L,3] indexed back and forth.

    "mirror" is the official `mirror_index` (end frames repeated); "ping_pong" is
    `real3d.motion.track.ping_pong_indices` (end frames not repeated), used by the mesh backend.
    """
    seq = _as_pose(euler, trans)
    if indexing == "mirror":
        idx = mirror_indices(n_frames, len(seq))
    elif indexing == "ping_pong":
        if len(seq) == 0:
            raise InputError("pose_from_sequence: the pose sequence is empty")
        idx = ping_pong_indices(n_frames, len(seq))
    else:
        raise InputError(f"pose_from_sequence: indexing must be 'mirror' or 'ping_pong', got {indexing!r}")
    idx_t = torch.from_numpy(idx)
    return PoseSequence(euler=seq.euler[idx_t], trans=seq.trans[idx_t])


def fix_depth(pose: PoseSequence) -> PoseSequence:
    """Depth of every frame set to the first frame's: trans[:, 2] = trans[0, 2]."""
    trans = pose.trans.clone()
    trans[:, 2] = trans[0, 2]
    return PoseSequence(euler=pose.euler, trans=trans)


def map_to_init_pose(pose: PoseSequence, src_euler: torch.Tensor, src_trans: torch.Tensor) -> PoseSequence:
    """Shift the clip so that frame 0 has the source pose (additive Euler and translation offsets)."""
    src = _as_pose(src_euler, src_trans)
    return PoseSequence(
        euler=pose.euler + (src.euler.to(pose.euler) - pose.euler[:1]),
        trans=pose.trans + (src.trans.to(pose.trans) - pose.trans[:1]),
    )


def driving_pose(
    src_euler: torch.Tensor,
    src_trans: torch.Tensor,
    n_frames: int,
    pose: PoseSequence | None = None,
    map_to_init: bool = True,
    indexing: Indexing = "mirror",
) -> PoseSequence:
    """Official pose pipeline: static (pose None) or indexed clip, depth fixed, then map_to_init_pose."""
    if n_frames <= 0:
        raise InputError(f"driving_pose: n_frames must be positive, got {n_frames}")
    if pose is None:
        out = static_pose(src_euler, src_trans, n_frames)
    else:
        out = pose_from_sequence(pose.euler, pose.trans, n_frames, indexing)
    out = fix_depth(out)
    return map_to_init_pose(out, src_euler, src_trans) if map_to_init else out


def _window_sums(x: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of x [T,...] over the truncated windows [i-half, i+half] and the window sizes [T]."""
    n = x.shape[0]
    csum = np.concatenate([np.zeros_like(x[:1]), np.cumsum(x, 0)])
    lo = np.maximum(np.arange(n) - half, 0)
    hi = np.minimum(np.arange(n) + half + 1, n)
    return csum[hi] - csum[lo], (hi - lo).astype(np.float64)


def smooth_cameras(camera: torch.Tensor, kernel_size: int = SMOOTH_KERNEL) -> torch.Tensor:
    """Official `smooth_camera_sequence`: camera [T,25] (or [T,16]) -> smoothed copy, same dtype.

    Translation: mean over the window [i - k//2, i + k//2] truncated at the ends. Rotation: the
    rotation mean of scipy's `Rotation.mean` over the same window (the quaternion q maximising
    sum_i (q . q_i)^2, the top eigenvector of sum_i q_i q_i^T), computed for all frames at once.
    """
    if camera.ndim != 2 or camera.shape[1] not in (16, 25):
        raise InputError(f"smooth_cameras: camera must be [T,25] or [T,16], got {tuple(camera.shape)}")
    if kernel_size < 1:
        raise InputError(f"smooth_cameras: kernel_size must be >= 1, got {kernel_size}")
    cam = camera.detach().cpu().double().numpy()
    pose = cam[:, :16].reshape(-1, 4, 4)  # T x 4 x 4
    half = kernel_size // 2
    t_sum, size = _window_sums(pose[:, :3, 3], half)
    quat = Rotation.from_matrix(pose[:, :3, :3]).as_quat()  # T x 4
    q_sum, _ = _window_sums(np.einsum("ti,tj->tij", quat, quat), half)  # T x 4 x 4
    _, vecs = np.linalg.eigh(q_sum)
    out = cam.copy()
    smoothed = pose.copy()
    smoothed[:, :3, 3] = t_sum / size[:, None]
    smoothed[:, :3, :3] = Rotation.from_quat(vecs[:, :, -1]).as_matrix()
    out[:, :16] = smoothed.reshape(-1, 16)
    return torch.from_numpy(out).to(device=camera.device, dtype=camera.dtype)


def smooth_features(x: torch.Tensor, kernel_size: int = SMOOTH_KERNEL) -> torch.Tensor:
    """Official `smooth_features_xd`: moving average over time of x [T,...] with mirrored ends.

    The clip is padded with k//2 frames mirrored at each end *including* the end frame
    (x2 x1 x0 | x0 x1 ... ; numpy 'symmetric'), then averaged with a box of k frames; [T,...] out.
    Shorter clips than k//2 are padded by repeated mirroring (the official code fails there).
    """
    if x.ndim < 1 or x.shape[0] == 0:
        raise InputError(f"smooth_features: x must be [T,...] with T >= 1, got {tuple(x.shape)}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"smooth_features: kernel_size must be odd and positive, got {kernel_size}")
    pad = (kernel_size - 1) // 2
    t = x.shape[0]
    idx = np.arange(-pad, t + pad)
    period = 2 * t
    idx = np.mod(idx, period)
    idx = np.where(idx < t, idx, period - 1 - idx)  # symmetric reflection
    flat = rearrange(x, "t ... -> t (...)")  # T x C
    padded = rearrange(flat[torch.from_numpy(idx).to(x.device)], "t c -> c 1 t")  # C x 1 x (T + 2 pad)
    kernel = torch.full((1, 1, kernel_size), 1.0 / kernel_size, dtype=x.dtype, device=x.device)
    out = F.conv1d(padded, kernel)  # C x 1 x T
    return rearrange(out, "c 1 t -> t c").reshape(x.shape)


def torso_keypoints(lm2d: torch.Tensor) -> torch.Tensor:
    """[T,68,2] lm68 in [0,1] image coordinates (y down) -> [T,68,3]: clamp((lm - 0.5)/0.5, -1, 1), z = 0."""
    if lm2d.ndim != 3 or lm2d.shape[-1] != 2:
        raise InputError(f"torso_keypoints: lm2d must be [T,K,2], got {tuple(lm2d.shape)}")
    kp = ((lm2d - 0.5) / 0.5).clamp(-1.0, 1.0)
    return torch.cat([kp, torch.zeros_like(kp[..., :1])], -1)
