"""Motion from a driving video: landmarks per frame -> pose + expression relative to the first
frame -> retargeted to the source face's proportions -> zero-lag smoothing -> MotionTrack.

Pose and expression are separated by a similarity (Kabsch) fit of the rigid landmarks of each
frame onto the first frame; what the rigid fit cannot explain is expression. Expression offsets are
measured in the driver's canonical frame (unit = its eye-corner distance), then scaled region by
region to the source: mouth offsets by the ratio of mouth width / lip height, eyelid offsets by the
ratio of lid openings, so a wide-mouthed driver does not tear a small mouth and a sleepy-eyed driver
still closes wide eyes fully. Smoothing is a Savitzky-Golay filter applied forward over the whole
track (zero phase: no lag on fast mouth moves).

Mouth state: offsets are measured from the driver's first frame *with its lips together* and added to the
source *with its lips together* (`real3d.motion.mouth.closed_mouth`), so the output's lip gap is the driver's
own: when the driver closes its mouth the output closes it too, even if the photo (or the driver's first
frame) was taken mid-word or smiling with teeth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.signal import savgol_filter

from real3d.errors import NoFaceError
from real3d.face import topology as topo
from real3d.face.canonical import head_frame, kabsch
from real3d.face.landmarks import FaceAnalyzer
from real3d.geometry import matrix_to_euler
from real3d.motion.mouth import closed_mouth
from real3d.motion.track import N_LANDMARKS, MotionTrack

log = logging.getLogger(__name__)


@dataclass
class RetargetConfig:
    """How driver expression is mapped onto the source face."""

    expression_window: int = 5
    """Savitzky-Golay window (frames) for expression; 1 disables smoothing."""
    pose_window: int = 9
    """Savitzky-Golay window (frames) for head pose."""
    scale_limits: tuple[float, float] = (0.6, 1.6)
    """Clamp of the per-region proportion ratios (source / driver)."""
    expression_gain: float = 1.0
    """Multiplier on all expression offsets (1 = as the driver)."""


def fill_missing_landmarks(lms: np.ndarray) -> np.ndarray:
    """Linearly interpolate frames without a face (NaN rows); hold at the ends."""
    ok = ~np.isnan(lms).any(axis=(1, 2))
    if not ok.any():
        raise NoFaceError("no face was found in any frame of the driving video; use a video showing one face")
    if ok.all():
        return lms
    t = np.arange(len(lms))
    flat = lms.reshape(len(lms), -1).copy()
    for j in range(flat.shape[1]):
        flat[~ok, j] = np.interp(t[~ok], t[ok], flat[ok, j])
    log.info("no face in %d of %d driver frames; interpolated", int((~ok).sum()), len(lms))
    return flat.reshape(lms.shape)


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x)
    w = min(window, n if n % 2 else n - 1)
    if w < 5:
        return x
    return savgol_filter(x, w, 2, axis=0, mode="interp").astype(x.dtype)


def _lid_gap(q: np.ndarray) -> float:
    up = np.r_[topo.RIGHT_EYE_UPPER, topo.LEFT_EYE_UPPER]
    lo = np.r_[topo.RIGHT_EYE_LOWER, topo.LEFT_EYE_LOWER]
    return float(np.mean(q[lo, 1] - q[up, 1]))


def _mouth_size(q: np.ndarray) -> tuple[float, float]:
    width = float(np.linalg.norm(q[topo.MOUTH_CORNERS[1]] - q[topo.MOUTH_CORNERS[0]]))
    height = float(q[17, 1] - q[0, 1])  # outer lower-lip bottom minus outer upper-lip top
    return width, height


def _plateau(d: np.ndarray) -> np.ndarray:
    """1 inside the unit ellipse, smooth fall-off to 0 at twice its size."""
    t = np.clip(d - 1.0, 0.0, 1.0)
    return 1.0 - t * t * (3 - 2 * t)


def region_scales(drv_neutral: np.ndarray, src_neutral: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """[478,3] per-landmark, per-axis factors mapping driver offsets to the source's proportions."""
    lo, hi = limits
    clamp = lambda v: float(np.clip(v, lo, hi))  # noqa: E731
    dw, dh = _mouth_size(drv_neutral)
    sw, sh = _mouth_size(src_neutral)
    mouth = np.array([clamp(sw / max(dw, 1e-6)), clamp(sh / max(dh, 1e-6)), 1.0])
    eye = np.array([1.0, clamp(_lid_gap(src_neutral) / max(_lid_gap(drv_neutral), 1e-6)), 1.0])
    # soft region membership from the source's own geometry
    q = src_neutral
    mouth_c = q[list(topo.OUTER_LIP_UPPER + topo.OUTER_LIP_LOWER)].mean(0)
    w_mouth = _plateau(np.linalg.norm((q - mouth_c)[:, :2] / [0.55, 0.45], axis=1))
    eyes = [q[list(topo.RIGHT_EYE_LOOP)].mean(0), q[list(topo.LEFT_EYE_LOOP)].mean(0)]
    w_eye = np.max([_plateau(np.linalg.norm((q - c)[:, :2] / [0.3, 0.15], axis=1)) for c in eyes], axis=0)
    s = np.ones((len(q), 3))
    s = s + w_mouth[:, None] * (mouth - 1) + w_eye[:, None] * (eye - 1)
    return s.astype(np.float32)


def enforce_no_crossing(q: np.ndarray) -> np.ndarray:
    """Upper inner lip / eyelid points may meet their lower partners but never pass them ([...,478,3])."""
    q = q.copy()
    for up, lo in (
        (topo.INNER_LIP_UPPER, topo.INNER_LIP_LOWER),
        (topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER),
        (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER),
    ):
        upper, lower = np.asarray(up), np.asarray(lo)
        cross = q[..., upper, 1] > q[..., lower, 1]
        mid = 0.5 * (q[..., upper, 1] + q[..., lower, 1])
        q[..., upper, 1] = np.where(cross, mid, q[..., upper, 1])
        q[..., lower, 1] = np.where(cross, mid, q[..., lower, 1])
    return q


def track_from_landmarks(
    landmarks: np.ndarray,
    source_canonical: np.ndarray,
    fps: float,
    config: RetargetConfig | None = None,
) -> MotionTrack:
    """Build a retargeted MotionTrack from driver landmarks.

    landmarks: [T,478,3] driver landmarks in pixels (NaN rows = no face in that frame), already at `fps`.
    source_canonical: [478,3] the source's neutral canonical landmarks (`Portrait.canonical`).
    """
    cfg = config or RetargetConfig()
    lms = fill_missing_landmarks(np.asarray(landmarks, np.float64))
    n = len(lms)
    rigid = list(topo.RIGID)
    f0 = head_frame(lms[0])
    q0 = f0.to_canonical(lms[0])
    rot = np.zeros((n, 3))
    trans = np.zeros((n, 3))
    canon = np.empty((n, N_LANDMARKS, 3))
    c0 = lms[0][rigid].mean(0)
    for t in range(n):
        r, s, tr = kabsch(lms[0][rigid], lms[t][rigid])
        aligned = ((lms[t] - tr) @ r) / s  # frame t brought back to frame 0's pose: inverse of s R x + t
        canon[t] = f0.to_canonical(aligned)
        rot[t] = matrix_to_euler(r)
        ct = s * r @ c0 + tr
        trans[t, :2] = (ct - c0)[:2] / f0.scale
        trans[t, 2] = np.log(s)
    drv_rest = closed_mouth(q0)
    offsets = canon - drv_rest[None]
    offsets = _smooth(offsets, cfg.expression_window)
    rot = _smooth(rot, cfg.pose_window)
    trans = _smooth(trans, cfg.pose_window)
    src = np.asarray(source_canonical, np.float64)
    src_rest = closed_mouth(src)
    scales = region_scales(drv_rest, src_rest, cfg.scale_limits)
    target = enforce_no_crossing(src_rest[None] + cfg.expression_gain * offsets * scales[None])
    expression = (target - src[None]).astype(np.float32)
    gap = target[:, topo.LOWER_LIP_MID, 1] - target[:, topo.UPPER_LIP_MID, 1]
    return MotionTrack(
        fps=float(fps),
        euler=rot.astype(np.float32),
        trans=trans.astype(np.float32),
        expression=expression,
        blink=np.zeros(n, np.float32),
        mouth_open=np.maximum(gap, 0).astype(np.float32),
    )


def video_landmarks(frames, analyzer=None) -> np.ndarray:
    """[T,478,3] landmarks of the main face in each frame of an iterable of RGB frames (NaN = none)."""

    own = analyzer is None
    analyzer = analyzer or FaceAnalyzer()
    out = []
    try:
        for fr in frames:
            lm = analyzer.track(fr)
            out.append(np.full((N_LANDMARKS, 3), np.nan, np.float32) if lm is None else lm)
    finally:
        if own:
            analyzer.close()
    if not out:
        raise NoFaceError("the driving video has no frames")
    return np.stack(out)
