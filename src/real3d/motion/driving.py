"""What drives a portrait, read once by the pipeline and handed to a backend's `motion` step.

`Driving` is backend-neutral: speech samples, or a driving video (opened; the backend tracks it, whole or in
chunks while it renders), the landmarks of a pose video, plus the user's motion options. Each backend turns it
into its own motion (the mesh backend a stream of `MotionTrack` chunks, the neural backend a `BFMTrack`) and
renders frames from that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from real3d.errors import InputError, NoFaceError
from real3d.face.landmarks import FaceAnalyzer
from real3d.io.audio import load_audio
from real3d.io.prefetch import prefetch
from real3d.io.video import iter_frames, probe_video
from real3d.motion.blink import BlinkMode
from real3d.motion.from_video import fill_missing_landmarks
from real3d.motion.track import N_LANDMARKS

SPEECH_RATE = 16000
"""Sample rate (Hz) of `Driving.speech` (what every audio analysis here reads)."""
DRIVER_MAX_SIDE = 640
"""Driver frames are downscaled to this longer side before landmark tracking (speed; precision is ample)."""

STREAM_CHUNK_FRAMES = 8
"""Frames per landmark chunk of `DrivingVideo.chunks` (small: the first frame renders soon)."""


FrameProgress = Callable[[int, int], None]
"""Called with (frames done, frames in all) while a driving video is tracked."""


@dataclass(frozen=True)
class TrackedVideo:
    """Face landmarks of a driving (or pose) video, resampled to the output frame rate."""

    path: Path
    """The video file."""
    landmarks: np.ndarray
    """[T,478,3] float32 MediaPipe landmarks in pixels of the tracked frames (frames without a face interpolated)."""
    size: tuple[int, int]
    """(height, width) of the tracked frames."""

    def __len__(self) -> int:
        return len(self.landmarks)


@dataclass(frozen=True)
class DrivingVideo:
    """A driving video, checked and measured but not tracked yet: a backend tracks it whole (`track`) or in
    chunks while it renders (`chunks`), each time with a fresh tracker so no state carries over."""

    path: Path
    """The video file."""
    fps: float
    """Frame rate the video is resampled to (the output's)."""
    n_frames: int
    """Frames at `fps` from the container's duration, cut to the frame limit (a truncated file decodes fewer)."""
    progress: FrameProgress | None = None
    """Called by `track` with (frames done, `n_frames`), from the caller's thread."""

    @classmethod
    def open(
        cls, path: str | Path, fps: float, max_frames: int | None = None, progress: FrameProgress | None = None
    ) -> DrivingVideo:
        """Probe `path` (InputError for a missing, corrupt or empty video) and count its frames at `fps`."""
        info = probe_video(path)
        n = max(1, int(round(info.duration * fps)))
        return cls(Path(path), float(fps), n if max_frames is None else min(n, max_frames), progress)

    def _tracked(self) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
        """([478,3] float32 landmarks of the main face, NaN where there is none; (height, width) of the tracked
        frame) per frame, from a fresh tracker in the calling thread. The next frames are decoded ahead in a
        background thread (`prefetch`)."""
        decoded = islice(iter_frames(self.path, max_size=DRIVER_MAX_SIDE, fps=self.fps), self.n_frames)
        with FaceAnalyzer() as analyzer:
            for frame in prefetch(decoded, depth=3, name="real3d-decode-driver"):
                lm = analyzer.track(frame)
                yield (np.full((N_LANDMARKS, 3), np.nan, np.float32) if lm is None else lm), frame.shape[:2]

    def track(self) -> TrackedVideo:
        """All frames' landmarks (frames without a face interpolated), calling `progress` per frame."""
        out = []
        size = (0, 0)
        for i, (lm, size) in enumerate(self._tracked()):
            out.append(lm)
            if self.progress is not None:
                self.progress(i + 1, self.n_frames)
        if not out:
            raise NoFaceError(f"{self.path} has no frames to track; use a video showing one face")
        lms = fill_missing_landmarks(np.stack(out).astype(np.float64))
        return TrackedVideo(self.path, lms.astype(np.float32), size)

    def chunks(self, size: int = STREAM_CHUNK_FRAMES) -> Iterator[np.ndarray]:
        """[<=size,478,3] float32 landmark chunks (NaN rows where there is no face), tracked in the calling
        thread as they are asked for (a backend runs this in a background thread to track while it renders)."""
        buf: list[np.ndarray] = []
        for lm, _ in self._tracked():
            buf.append(lm)
            if len(buf) == size:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)


@dataclass(frozen=True)
class Driving:
    """Everything that drives one run, in the form every backend reads."""

    fps: float
    """Output frame rate."""
    speech: np.ndarray | None = None
    """[N] float32 mono samples at `SPEECH_RATE` when speech drives the mouth (audio driving)."""
    video: DrivingVideo | None = None
    """The driving video: expression and head pose (video driving)."""
    pose: TrackedVideo | None = None
    """Head pose from this video instead (ping-pong when shorter)."""
    still: bool = False
    """Hold the source's head pose (no head motion)."""
    max_frames: int | None = None
    """Stop after this many frames (None = the driver's length)."""
    mouth_amp: float = 0.45
    """Mouth amplitude for audio driving (official default 0.45 = neutral)."""
    blink: BlinkMode = "natural"
    """Blink schedule for audio driving: natural, periodic (the official every 5 s) or none."""
    seed: int = 0
    """Seed of everything random (blinks, idle head motion, A2M sampling)."""

    def __post_init__(self) -> None:
        if (self.speech is None) == (self.video is None):
            raise InputError("give exactly one driver: a video (expression + pose) or speech audio")
        if not 0 < self.fps <= 120:
            raise InputError(f"fps {self.fps} is out of range; use a frame rate between 1 and 120")

    def limit(self, n_frames: int) -> int:
        """`n_frames` cut to `max_frames`."""
        return n_frames if self.max_frames is None else min(n_frames, self.max_frames)


def read_speech(path: str | Path) -> np.ndarray:
    """[N] float32 mono samples at `SPEECH_RATE` of any audio file (or a video's sound)."""
    return load_audio(path, sample_rate=SPEECH_RATE, mono=True).samples


def track_video(
    path: str | Path, fps: float, max_frames: int | None = None, progress: FrameProgress | None = None
) -> TrackedVideo:
    """Landmarks of a whole video at `fps` (at most `max_frames` frames): `DrivingVideo.open(...).track()`."""
    return DrivingVideo.open(path, fps, max_frames, progress).track()
