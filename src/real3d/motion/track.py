"""The Motion track: what the mesh backend's drivers produce and its renderer consumes.

Coordinates. Expression lives in the *canonical face frame*: the face with head pose removed,
x to the viewer's right, y down, z away from the camera, origin at the centroid of the face-oval
landmarks, unit = distance between the outer eye corners (MediaPipe 33 and 263). See
`real3d.face.canonical` for the transform between image landmarks and this frame.

Pose is *relative*: rotation (Euler angles, `euler`) and translation (`trans`) of the driver's head with respect
to its first frame, applied by the backend on top of the source portrait's own pose.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

N_LANDMARKS = 478


@dataclass
class MotionTrack:
    """Per-frame head pose, expression, eyes and mouth, at a fixed frame rate."""

    fps: float
    """Frames per second of the track (the output video's rate)."""
    euler: np.ndarray
    """[T,3] float32 head rotation as Euler angles (pitch, yaw, roll) in radians, relative to the source pose.
    Rotation matrix R = Rz(roll) @ Ry(yaw) @ Rx(pitch), acting on canonical (x right, y down, z away)."""
    trans: np.ndarray
    """[T,3] float32: x, y shift of the head in canonical units (inter-ocular distances), and z as
    the log of the scale change (> 0 = closer to the camera)."""
    expression: np.ndarray
    """[T,478,3] float32 landmark offsets in the canonical frame, added to the source's neutral
    canonical landmarks (already retargeted to the source's proportions)."""
    blink: np.ndarray
    """[T] float32 extra eyelid closure in [0,1] applied on top of `expression` (1 = fully shut)."""
    mouth_open: np.ndarray
    """[T] float32 inner-lip gap / inter-ocular distance after retargeting (drives the mouth interior)."""
    meta: dict = field(default_factory=dict)
    """Free-form provenance (driver path, options); never read by renderers."""

    def __post_init__(self) -> None:
        t = len(self.euler)
        checks = {
            "euler": (self.euler, (t, 3)),
            "trans": (self.trans, (t, 3)),
            "expression": (self.expression, (t, N_LANDMARKS, 3)),
            "blink": (self.blink, (t,)),
            "mouth_open": (self.mouth_open, (t,)),
        }
        for name, (arr, shape) in checks.items():
            if tuple(np.shape(arr)) != shape:
                raise ValueError(f"MotionTrack.{name} has shape {np.shape(arr)}, expected {shape}")
        if not self.fps > 0:
            raise ValueError(f"MotionTrack.fps must be positive, got {self.fps}")

    def __len__(self) -> int:
        return len(self.euler)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self) / self.fps

    @classmethod
    def still(cls, n_frames: int, fps: float) -> MotionTrack:
        """A track that holds the source exactly as it is."""
        z3 = np.zeros((n_frames, 3), np.float32)
        return cls(
            fps=fps,
            euler=z3,
            trans=z3.copy(),
            expression=np.zeros((n_frames, N_LANDMARKS, 3), np.float32),
            blink=np.zeros(n_frames, np.float32),
            mouth_open=np.zeros(n_frames, np.float32),
        )

    def slice(self, start: int, stop: int) -> MotionTrack:
        """Frames [start, stop) as a new track."""
        sl = slice(start, stop)
        return replace(
            self,
            euler=self.euler[sl],
            trans=self.trans[sl],
            expression=self.expression[sl],
            blink=self.blink[sl],
            mouth_open=self.mouth_open[sl],
        )

    def with_pose_of(self, other: MotionTrack) -> MotionTrack:
        """This track's expression with `other`'s head pose; `other` is ping-ponged when shorter
        (the official `mirror_index` behaviour)."""
        idx = ping_pong_indices(len(self), len(other))
        return replace(self, euler=other.euler[idx].copy(), trans=other.trans[idx].copy())

    def without_pose(self) -> MotionTrack:
        """The same expression with the head held at the source pose (`--still`)."""
        return replace(self, euler=np.zeros_like(self.euler), trans=np.zeros_like(self.trans))


def concatenate_tracks(tracks: list[MotionTrack]) -> MotionTrack:
    """One track of the frames of `tracks` in order (same fps; the first track's meta)."""
    if not tracks:
        raise ValueError("no tracks to concatenate")
    first = tracks[0]
    if any(t.fps != first.fps for t in tracks):
        raise ValueError("cannot concatenate tracks of different frame rates")
    fields = ("euler", "trans", "expression", "blink", "mouth_open")
    return replace(first, **{f: np.concatenate([getattr(t, f) for t in tracks]) for f in fields})


class MotionStream:
    """A MotionTrack of known length delivered in chunks, so long audio stays in bounded memory."""

    def __init__(self, n_frames: int, chunks: Iterable[MotionTrack]) -> None:
        self.n_frames = n_frames
        self._chunks = iter(chunks)

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[MotionTrack]:
        """The chunks, cut to `n_frames` in all (one pass only). The source is closed when the pass ends or
        stops early, so a producer behind it (e.g. a tracking thread) stops at once."""
        left = self.n_frames
        try:
            for chunk in self._chunks:
                if left <= 0:
                    return
                yield chunk if len(chunk) <= left else chunk.slice(0, left)
                left -= len(chunk)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def with_pose_of(self, pose: MotionTrack) -> MotionStream:
        """The same chunks with `pose`'s head pose, ping-ponged over the whole stream."""

        def posed() -> Iterator[MotionTrack]:
            start = 0
            for c in self:
                idx = ping_pong_indices(start + len(c), len(pose))[start:]
                start += len(c)
                yield replace(c, euler=pose.euler[idx].copy(), trans=pose.trans[idx].copy())

        return MotionStream(self.n_frames, posed())

    def without_pose(self) -> MotionStream:
        """The same chunks with the head held at the source pose (`--still`)."""
        return MotionStream(self.n_frames, (c.without_pose() for c in self))


def ping_pong_indices(n: int, length: int) -> np.ndarray:
    """Indices 0,1,..,L-1,L-2,..,0,1,.. of length n (back and forth over a sequence of `length`)."""
    if length <= 0:
        raise ValueError("cannot index an empty sequence")
    if length == 1:
        return np.zeros(n, dtype=np.int64)
    period = 2 * (length - 1)
    k = np.arange(n) % period
    return np.where(k < length, k, period - k).astype(np.int64)
