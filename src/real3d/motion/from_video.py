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

import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import convolve1d
from scipy.signal import savgol_coeffs, savgol_filter

from real3d.errors import NoFaceError
from real3d.face import topology as topo
from real3d.face.canonical import HeadFrame, head_frame, kabsch
from real3d.geometry import matrix_to_euler
from real3d.motion.mouth import closed_mouth
from real3d.motion.track import N_LANDMARKS, MotionTrack, concatenate_tracks

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
    filled = _interpolate_gaps(lms)
    if filled is not lms:
        n_missing = int(np.isnan(lms).any(axis=(1, 2)).sum())
        log.info("no face in %d of %d driver frames; interpolated", n_missing, len(lms))
    return filled


def _interpolate_gaps(lms: np.ndarray) -> np.ndarray:
    """`lms` with its NaN rows interpolated per value by `np.interp` over the frames with a face (`lms` itself
    when none is missing); NoFaceError when no frame has one."""
    ok = ~np.isnan(lms).any(axis=(1, 2))
    if not ok.any():
        raise NoFaceError("no face was found in any frame of the driving video; use a video showing one face")
    if ok.all():
        return lms
    t = np.arange(len(lms))
    flat = lms.reshape(len(lms), -1).copy()
    for j in range(flat.shape[1]):
        flat[~ok, j] = np.interp(t[~ok], t[ok], flat[ok, j])
    return flat.reshape(lms.shape)


def _effective_window(window: int, n: int) -> int:
    """The smoothing window for a track of n frames: `window`, at most the longest odd length that fits;
    1 (no smoothing) below 5 frames."""
    w = min(window, n if n % 2 else n - 1)
    return w if w >= 5 else 1


def _savgol(x: np.ndarray, window: int, edges: bool = True) -> np.ndarray:
    """Savitzky-Golay (order 2) along axis 0 as `savgol_filter(mode="interp")` computes it. Without `edges`, the
    first and last window // 2 values are left unfitted (wrong): the interior alone, for callers that drop them."""
    if window == 1:
        return x
    if not edges:  # savgol_filter's own interior: the same convolution
        return convolve1d(x, _savgol_weights(window), axis=0, mode="constant")
    return savgol_filter(x, window, 2, axis=0, mode="interp").astype(x.dtype)


@functools.lru_cache(maxsize=8)
def _savgol_weights(window: int) -> np.ndarray:
    return savgol_coeffs(window, 2)


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
    lms = fill_missing_landmarks(np.asarray(landmarks, np.float64))
    retarget = Retargeter(source_canonical, fps, config)
    parts = [retarget.push(lms), retarget.finish()]
    return concatenate_tracks([p for p in parts if p is not None])


def stream_track_from_landmarks(
    chunks: Iterable[np.ndarray],
    source_canonical: np.ndarray,
    fps: float,
    config: RetargetConfig | None = None,
) -> Iterator[MotionTrack]:
    """`track_from_landmarks` over landmark chunks as they are tracked: yields MotionTrack chunks as soon as
    their frames are final (a few frames behind the input), identical frame for frame to the whole-track
    result, in bounded memory. Frames without a face (NaN rows) are filled as `fill_missing_landmarks` does and
    kept in the chunks' dtype, as `TrackedVideo` keeps them."""
    retarget = Retargeter(source_canonical, fps, config)
    gaps = _GapFiller()
    for chunk in chunks:
        for filled in gaps.push(np.asarray(chunk)):
            part = retarget.push(filled)
            if part is not None:
                yield part
    tail = gaps.finish()
    part = retarget.push(tail) if tail is not None else None
    if part is not None:
        yield part
    part = retarget.finish()
    if part is not None:
        yield part


class _GapFiller:
    """`fill_missing_landmarks` on a stream: frames without a face wait for the next face, then are filled from
    the faces around them as the whole track would fill them (held at the ends)."""

    def __init__(self) -> None:
        self._t = 0
        self._pending: list[int] = []
        self._last: tuple[int, np.ndarray] | None = None
        self._missing = 0

    def push(self, lms: np.ndarray) -> list[np.ndarray]:
        """The frames that are final after adding `lms` [k,478,3] (NaN rows = no face), as float64 chunks."""
        out: list[np.ndarray] = []
        ok = ~np.isnan(lms).any(axis=(1, 2))
        run = 0  # start of the current run of faces in lms
        for i in range(len(lms)):
            t = self._t + i
            if not ok[i]:
                if i > run:
                    out.append(lms[run:i])
                    self._last = (t - 1, lms[i - 1])
                self._pending.append(t)
                self._missing += 1
                run = i + 1
            elif self._pending:
                out.append(self._fill(lms[i], lms.dtype))
        if run < len(lms):
            out.append(lms[run:])
        ends = np.flatnonzero(ok)
        if len(ends):
            self._last = (self._t + int(ends[-1]), lms[ends[-1]])
        self._t += len(lms)
        return [np.asarray(c, np.float64) for c in out]

    def _fill(self, face: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The waiting frames, up to the next face `face`: interpolated from the face before them as
        `fill_missing_landmarks` does on the whole track (held at the start), in float64, stored as `dtype`."""
        gap = np.full((len(self._pending), *face.shape), np.nan)
        self._pending = []
        if self._last is None:
            return _interpolate_gaps(np.concatenate([gap, face[None]]))[:-1].astype(dtype)
        window = np.concatenate([self._last[1][None], gap, face[None]]).astype(np.float64)
        return _interpolate_gaps(window)[1:-1].astype(dtype)

    def finish(self) -> np.ndarray | None:
        """The frames still waiting at the end (held at the last face); NoFaceError if no frame had a face."""
        if self._last is None:
            raise NoFaceError("no face was found in any frame of the driving video; use a video showing one face")
        if self._missing:
            log.info("no face in %d of %d driver frames; interpolated", self._missing, self._t)
        if not self._pending:
            return None
        held = np.repeat(self._last[1][None], len(self._pending), 0)
        self._pending = []
        return held.astype(np.float64)


class Retargeter:
    """The retargeting of `track_from_landmarks`, fed in chunks: `push` driver landmarks (filled, [k,478,3]
    pixels) as they come, get back the MotionTrack frames that are final; `finish` returns the rest.

    Pose is measured per frame against the driver's first frame, so only the zero-phase smoothing looks
    ahead: a frame is final once half the longest smoothing window has arrived after it. The Savitzky-Golay
    filter is linear with fixed weights, so smoothing a window around each frame gives the whole-track value
    exactly; the first and last frames are fitted on the track's own first and last windows, as
    `savgol_filter(mode="interp")` fits them."""

    def __init__(self, source_canonical: np.ndarray, fps: float, config: RetargetConfig | None = None) -> None:
        self.config = config or RetargetConfig()
        self.fps = float(fps)
        self._src = np.asarray(source_canonical, np.float64)
        self._src_rest = closed_mouth(self._src)
        self._windows = (self.config.expression_window, self.config.pose_window, self.config.pose_window)
        # a track at least this long smooths with the configured windows (a shorter one with shorter windows):
        # frames are returned once that many have arrived, then each once `reach` frames after it are in
        self._min_frames = max(self._windows) + 1
        self._reach = max(_effective_window(w, self._min_frames) for w in self._windows) // 2
        self._first: _DriverRest | None = None
        self._raw: list[np.ndarray] = [np.empty((0, N_LANDMARKS, 3)), np.empty((0, 3)), np.empty((0, 3))]
        self._raw_start = 0
        self._received = 0
        self._emitted = 0

    def push(self, landmarks: np.ndarray) -> MotionTrack | None:
        """Add frames; return the frames that became final (None when none did)."""
        lms = np.asarray(landmarks, np.float64)
        if not len(lms):
            return None
        if self._first is None:
            self._first = _DriverRest.of(lms[0], self._src_rest, self.config)
        raw = self._first.measure(lms)
        self._raw = [np.concatenate([a, b]) for a, b in zip(self._raw, raw, strict=True)]
        self._received += len(lms)
        stop = self._received - self._reach
        if self._received < self._min_frames + self._reach or stop <= self._emitted:
            return None
        return self._emit(stop, final=False)

    def finish(self) -> MotionTrack | None:
        """The frames not returned yet (the end of the track)."""
        if self._received == self._emitted:
            return None
        return self._emit(self._received, final=True)

    def _emit(self, stop: int, final: bool) -> MotionTrack:
        n = self._received
        windows = [_effective_window(w, n) for w in self._windows]  # as for the whole track (n <= its length)
        start = max(0, self._emitted - self._reach)
        if final:  # the last frames are fitted on the track's last window
            start = max(0, min(start, n - max(windows)))
        seg = [a[start - self._raw_start : n - self._raw_start] for a in self._raw]
        edges = final or start == 0  # only the track's own first and last frames need the edge fit
        smooth = [_savgol(a, w, edges) for a, w in zip(seg, windows, strict=True)]
        lo, hi = self._emitted - start, stop - start
        track = self._first.track(*(a[lo:hi] for a in smooth), self._src, self._src_rest, self.fps)
        self._emitted = stop
        # the next call starts at most `reach` before `stop`, or a whole window before the end
        keep = max(0, min(stop - self._reach, stop + self._reach - max(windows)))
        self._raw = [a[keep - self._raw_start :] for a in self._raw]
        self._raw_start = keep
        return track


@dataclass
class _DriverRest:
    """What the driver's first frame fixes for a whole track: its head frame, its lips-together rest shape and
    the per-region scales to the source."""

    first: np.ndarray
    """[478,3] the driver's first frame (pixels)."""
    frame: HeadFrame
    rest: np.ndarray
    """[478,3] its canonical landmarks with the lips together."""
    scales: np.ndarray
    """[478,3] `region_scales` from the driver to the source."""
    gain: float

    @classmethod
    def of(cls, first: np.ndarray, src_rest: np.ndarray, config: RetargetConfig) -> _DriverRest:
        f0 = head_frame(first)
        rest = closed_mouth(f0.to_canonical(first))
        return cls(first, f0, rest, region_scales(rest, src_rest, config.scale_limits), config.expression_gain)

    def measure(self, lms: np.ndarray) -> list[np.ndarray]:
        """[k,478,3] expression offsets from the rest shape, [k,3] Euler angles, [k,3] translation, unsmoothed."""
        rigid = list(topo.RIGID)
        n = len(lms)
        rot = np.zeros((n, 3))
        trans = np.zeros((n, 3))
        canon = np.empty((n, N_LANDMARKS, 3))
        c0 = self.first[rigid].mean(0)
        f0 = self.frame
        for t in range(n):
            r, s, tr = kabsch(self.first[rigid], lms[t][rigid])
            aligned = ((lms[t] - tr) @ r) / s  # frame t brought back to frame 0's pose: inverse of s R x + t
            canon[t] = f0.to_canonical(aligned)
            rot[t] = matrix_to_euler(r)
            ct = s * r @ c0 + tr
            trans[t, :2] = (ct - c0)[:2] / f0.scale
            trans[t, 2] = np.log(s)
        return [canon - self.rest[None], rot, trans]

    def track(
        self,
        offsets: np.ndarray,
        rot: np.ndarray,
        trans: np.ndarray,
        src: np.ndarray,
        src_rest: np.ndarray,
        fps: float,
    ) -> MotionTrack:
        """Smoothed offsets and pose -> the source's retargeted MotionTrack frames (`src_rest`: the source with
        its lips together)."""
        target = enforce_no_crossing(src_rest[None] + self.gain * offsets * self.scales[None])
        expression = (target - src[None]).astype(np.float32)
        gap = target[:, topo.LOWER_LIP_MID, 1] - target[:, topo.UPPER_LIP_MID, 1]
        n = len(offsets)
        return MotionTrack(
            fps=fps,
            euler=rot.astype(np.float32),
            trans=trans.astype(np.float32),
            expression=expression,
            blink=np.zeros(n, np.float32),
            mouth_open=np.maximum(gap, 0).astype(np.float32),
        )
