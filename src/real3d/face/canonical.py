"""The canonical face frame: head pose separated from expression, without a template.

Image landmarks `p` ([478,3] pixels: x right, y down, z away from the camera at image-x scale) and
canonical landmarks `q` are related by a similarity transform

    p = center + scale * q @ R.T          (R's columns are the canonical axes in image space)

The frame is found from the face itself: the x axis from subject-left/right pairs of rigid
points, the y axis along the rigid midline (forehead -> nose tip), the origin at the centroid of
the rigid points and the unit = distance between the outer eye corners. Between frames of one
video the rotation is refined by a Kabsch fit on the rigid points (stable under expression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from real3d.face import topology as topo


@dataclass(frozen=True)
class HeadFrame:
    """Similarity transform from canonical to image coordinates."""

    rotation: np.ndarray
    """[3,3] columns = canonical x, y, z axes in image space."""
    center: np.ndarray
    """[3] origin of the canonical frame in image pixels."""
    scale: float
    """Pixels per canonical unit (the 3-D outer-eye-corner distance)."""

    def to_canonical(self, lm: np.ndarray) -> np.ndarray:
        """[...,3] image landmarks -> canonical."""
        return ((lm - self.center) @ self.rotation) / self.scale

    def to_image(self, q: np.ndarray) -> np.ndarray:
        """[...,3] canonical -> image landmarks."""
        return self.center + self.scale * (q @ self.rotation.T)


def _orthonormal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x)
    y = y - x * (x @ y)
    y = y / np.linalg.norm(y)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=1)


def head_frame(lm: np.ndarray) -> HeadFrame:
    """Template-free head frame of one face ([>=468,3] image landmarks)."""
    lm = np.asarray(lm, np.float64)
    pairs = np.asarray(topo.SYMMETRIC_PAIRS)
    # subject's right points have smaller image x in a frontal view: x axis = right->left of image... we want
    # canonical x to point to the viewer's right, i.e. from subject-right (33) to subject-left (263)
    d = lm[pairs[:, 1]] - lm[pairs[:, 0]]
    x_axis = (d / np.linalg.norm(d, axis=1, keepdims=True)).sum(0)
    mid = lm[list(topo.MIDLINE)]
    # midline direction: principal axis of the midline points, oriented forehead -> nose tip (down)
    centred = mid - mid.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    y_axis = vt[0]
    if y_axis @ (lm[topo.NOSE_TIP] - lm[topo.FOREHEAD]) < 0:
        y_axis = -y_axis
    rot = _orthonormal(x_axis, y_axis)
    rigid = lm[list(topo.RIGID)]
    center = rigid.mean(0)
    scale = float(np.linalg.norm(lm[topo.LEFT_EYE_OUTER] - lm[topo.RIGHT_EYE_OUTER]))
    return HeadFrame(rotation=rot, center=center, scale=max(scale, 1e-6))


def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """Similarity (R, s, t) minimising sum w |s R src_i + t - dst_i|^2 (rows are points)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    dfix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ dfix @ vt
    var = (w * (a**2).sum(1)).sum()
    s = float((sig * np.diag(dfix)).sum() / max(var, 1e-12))
    t = mu_d - s * rot @ mu_s
    return rot, s, t
