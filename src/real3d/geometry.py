"""Head-pose geometry shared by every layer: Euler angles <-> rotation matrices and the EG3D camera of a
3DMM pose. One convention everywhere: euler = (pitch, yaw, roll) radians, R = Rz(roll) @ Ry(yaw) @ Rx(pitch).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from einops import rearrange

Array = TypeVar("Array", np.ndarray, torch.Tensor)

FFHQ_FOCAL = 4.2647
"""Normalised focal length of the EG3D FFHQ intrinsics (2985.29 / 700)."""
CAMERA_SCALE = 0.27
"""3DMM-to-world scale of the camera centre."""
CAMERA_OFFSET = (0.0, 0.006, 0.161)
"""World offset added to the scaled camera centre."""
CAMERA_DISTANCE_3DMM = 10.0
"""Distance of the 3DMM camera along +z (the translation is taken relative to it)."""


def euler_to_matrix(euler: Array) -> Array:
    """[...,3] (pitch, yaw, roll) radians -> [...,3,3] R = Rz(roll) @ Ry(yaw) @ Rx(pitch).

    NumPy in, NumPy out (float64); a torch tensor in, a tensor of its dtype out (differentiable)."""
    xp = torch if isinstance(euler, torch.Tensor) else np
    e = euler if xp is torch else np.asarray(euler, np.float64)
    p, y, r = e[..., 0], e[..., 1], e[..., 2]
    cp, sp, cy, sy, cr, sr = xp.cos(p), xp.sin(p), xp.cos(y), xp.sin(y), xp.cos(r), xp.sin(r)
    one, zero = xp.ones_like(p), xp.zeros_like(p)
    shape = tuple(e.shape[:-1]) + (3, 3)
    rx = xp.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(shape)
    ry = xp.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(shape)
    rz = xp.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(shape)
    return rz @ ry @ rx


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """Inverse of `euler_to_matrix` ([...,3,3] -> [...,3]); yaw in (-pi/2, pi/2)."""
    r = np.asarray(rot, np.float64)
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([pitch, yaw, roll], -1)


def camera_from_pose(euler: torch.Tensor, trans: torch.Tensor, focal: float = FFHQ_FOCAL) -> torch.Tensor:
    """3DMM head pose -> EG3D camera: row-major c2w (16, OpenCV axes) + normalised K (9).

    euler: [B,3] (pitch, yaw, roll) radians; trans: [B,3] 3DMM translation. Returns [B,25] in the
    dtype of `euler` (computed in float64). With R = euler_to_matrix(euler)^T (the 3DMM's row-vector
    rotation): c = 0.27 * (-R (trans - [0,0,10])) + [0, 0.006, 0.161], c2w[:3,:3] = R diag(1,-1,-1),
    K = [[f,0,.5],[0,f,.5],[0,0,1]].
    """
    if euler.ndim != 2 or euler.shape[-1] != 3 or trans.shape != euler.shape:
        raise ValueError(f"euler and trans must both be [B,3], got {tuple(euler.shape)} and {tuple(trans.shape)}")
    e, t = euler.double(), trans.double()
    rot = euler_to_matrix(e).transpose(1, 2)  # Bx3x3
    t = t - t.new_tensor([0.0, 0.0, CAMERA_DISTANCE_3DMM])
    centre = -(rot @ t.unsqueeze(-1)).squeeze(-1) * CAMERA_SCALE + t.new_tensor(CAMERA_OFFSET)  # Bx3
    c2w = torch.zeros(e.shape[0], 4, 4, dtype=torch.float64, device=e.device)
    c2w[:, :3, :3] = rot * t.new_tensor([1.0, -1.0, -1.0])  # R @ diag(1,-1,-1)
    c2w[:, :3, 3] = centre
    c2w[:, 3, 3] = 1.0
    intr = t.new_tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]]).expand(e.shape[0], 3, 3)
    cam = torch.cat([rearrange(c2w, "b i j -> b (i j)"), rearrange(intr, "b i j -> b (i j)")], -1)  # Bx25
    return cam.to(euler.dtype)
