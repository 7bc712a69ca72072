"""Reading videos with PyAV: probing, streaming RGB frames (constant memory), display rotation, VFR timing.

Frames come out upright: the container's display matrix (phone videos store portrait clips as landscape
plus a rotation) is applied, as players do. Variable-frame-rate drivers are handled by timestamps: the
presentation times of the frames are read from the demuxer (no decoding) and `resample_indices` picks, for
each output frame time `k / fps_out`, the source frame with the nearest timestamp.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from real3d.errors import InputError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".gif"})
"""File suffixes treated as videos (a source with one of these uses its first frame; a driver drives like --video)."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learns about a video file."""

    path: Path
    """The probed file."""
    fps: float
    """Average frame rate (frames per second)."""
    num_frames: int
    """Frame count: exact when the container states it, otherwise estimated from duration * fps."""
    frames_exact: bool
    """True when `num_frames` comes from the container index rather than an estimate."""
    width: int
    """Displayed width in pixels (after rotation)."""
    height: int
    """Displayed height in pixels (after rotation)."""
    duration: float
    """Duration of the video stream in seconds."""
    has_audio: bool
    """True when the file also has an audio stream."""
    rotation: int
    """Counter-clockwise display rotation in degrees (0, 90, 180 or 270) applied to the decoded frames."""
    codec: str
    """Name of the video codec."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as displayed."""
        return self.width, self.height


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"video not found: {p}; check the path (quote it if it contains spaces)")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not a video; pass a video file such as clip.mp4")
    return p


def open_video_stream(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open a file and return (container, first video stream); raises InputError with advice on failure."""
    p = _check_file(path)
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise InputError(
            f"cannot read {p} as a video ({e.__class__.__name__}: {e.strerror or e}); "
            "pass a playable video file (mp4, mov, mkv, webm, avi)"
        ) from e
    if not container.streams.video:
        container.close()
        raise InputError(f"{p} has no video stream (is it an audio file or an image?); pass a video with frames")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _rotation_of(frame: av.VideoFrame) -> int:
    """The frame's counter-clockwise display rotation snapped to 0/90/180/270."""
    try:
        rot = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return int(round((rot or 0) / 90.0)) % 4 * 90


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation in degrees to an HxWxC image."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


def probe_video(path: str | Path) -> VideoInfo:
    """Describe a video: fps, frame count, displayed size, duration, audio presence, rotation.

    Decodes the first frame (to learn the rotation and to make sure frames exist); raises InputError for a
    missing file, a non-video, a file without a video stream or with zero decodable frames.
    """
    container, stream = open_video_stream(path)
    p = Path(path)
    try:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as e:
            raise InputError(f"cannot decode {p}: {e}; the file may be corrupt, re-export it") from e
        if first is None:
            raise InputError(f"{p} has no video frames; pass a video with at least one frame")
        rotation = _rotation_of(first)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        exact = bool(stream.frames and stream.frames > 0)
        if exact:
            num = int(stream.frames)
        else:
            num = max(1, int(round(duration * fps))) if fps > 0 and duration > 0 else 1
        if fps <= 0 and duration > 0:
            fps = num / duration
        if duration <= 0 and fps > 0:
            duration = num / fps
        return VideoInfo(
            path=p,
            fps=fps,
            num_frames=num,
            frames_exact=exact,
            width=w,
            height=h,
            duration=duration,
            has_audio=bool(container.streams.audio),
            rotation=rotation,
            codec=stream.codec_context.name,
        )
    finally:
        container.close()


def _target_size(w: int, h: int, max_size: int | None) -> tuple[int, int] | None:
    """Size (w, h) so that max(w, h) <= max_size keeping the aspect ratio; None when no resize is needed."""
    if max_size is None or max(w, h) <= max_size:
        return None
    s = max_size / max(w, h)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def iter_timed_frames(path: str | Path, max_size: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Stream (time in seconds, RGB uint8 HxWx3 frame) upright, downscaled so max(h, w) <= max_size."""
    for t, frame in _decoded(path):
        yield t, _to_rgb(frame, max_size)


def _decoded(path: str | Path) -> Iterator[tuple[float, av.VideoFrame]]:
    """(time in seconds, decoded frame) of every frame; InputError for a corrupt, truncated or empty video."""
    container, stream = open_video_stream(path)
    p = Path(path)
    n = 0
    try:
        tb = stream.time_base or Fraction(1, 1)
        start = stream.start_time or 0
        for frame in container.decode(stream):
            t = float((frame.pts - start) * tb) if frame.pts is not None else n / float(stream.average_rate or 25)
            n += 1
            yield t, frame
    except av.error.FFmpegError as e:
        raise InputError(f"cannot decode {p} (after {n} frames): {e}; the file may be truncated or corrupt") from e
    finally:
        container.close()
    if n == 0:
        raise InputError(f"{p} has no video frames; pass a video with at least one frame")


def _to_rgb(frame: av.VideoFrame, max_size: int | None) -> np.ndarray:
    """A decoded frame as RGB uint8 HxWx3, upright, downscaled so max(h, w) <= max_size."""
    size = _target_size(frame.width, frame.height, max_size)
    if size is None:
        img = frame.to_ndarray(format="rgb24")
    else:
        img = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
    return _rotate(img, _rotation_of(frame))


def first_frame(path: str | Path) -> np.ndarray:
    """The first frame of a video as RGB uint8 [H,W,3] (upright)."""
    for frame in iter_frames(path):
        return frame
    raise InputError(f"{path} has no video frames; pass a video with at least one frame")


def iter_frames(path: str | Path, max_size: int | None = None, fps: float | None = None) -> Iterator[np.ndarray]:
    """Stream a video's frames as RGB uint8 HxWx3 arrays (upright), in constant memory.

    `max_size` downscales so that the longer side is at most that many pixels. With `fps`, frames are
    resampled to that rate by nearest timestamp (frames repeated or dropped), for the video's duration.
    """
    if fps is None:
        for _, img in iter_timed_frames(path, max_size):
            yield img
        return
    times = frame_timestamps(path)
    duration = probe_video(path).duration
    wanted = resample_indices(times, fps, duration)
    pos = 0
    for i, (_, frame) in enumerate(_decoded(path)):
        if pos < len(wanted) and wanted[pos] == i:  # frames the new rate drops are never converted
            img = _to_rgb(frame, max_size)
            while pos < len(wanted) and wanted[pos] == i:
                yield img
                pos += 1
        if pos >= len(wanted):
            break


def count_frames(path: str | Path, fps: float | None = None) -> int:
    """How many frames `iter_frames(path, fps=fps)` yields, from the demuxer's timestamps (nothing decoded). A
    stream that fails to decode makes `iter_frames` raise InputError before it gets there."""
    times = frame_timestamps(path)
    if fps is None:
        return len(times)
    return len(resample_indices(times, fps, probe_video(path).duration))


def frame_timestamps(path: str | Path) -> np.ndarray:
    """Presentation times (seconds, sorted, starting at 0) of the video frames, from the demuxer only."""
    container, stream = open_video_stream(path)
    try:
        tb = stream.time_base or Fraction(1, 1)
        pts = [pkt.pts for pkt in container.demux(stream) if pkt.pts is not None and pkt.size > 0]
    except av.error.FFmpegError as e:
        raise InputError(f"cannot read {path}: {e}; the file may be corrupt") from e
    finally:
        container.close()
    if not pts:
        raise InputError(f"{path} has no video frames; pass a video with at least one frame")
    t = np.sort(np.asarray(pts, dtype=np.float64)) * float(tb)
    return t - t[0]


def resample_indices(src_timestamps: np.ndarray, fps_out: float, duration: float | None = None) -> np.ndarray:
    """For each output frame time k / fps_out (k < round(duration * fps_out)), the nearest source frame index.

    `src_timestamps` are the source frames' presentation times in seconds (sorted ascending). Without
    `duration`, the source's last timestamp plus one mean frame interval is used. Returns int64 (n_out,),
    non-decreasing, so a streaming reader can repeat/drop frames on the fly.
    """
    ts = np.asarray(src_timestamps, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError("src_timestamps must be a non-empty 1-D array")
    if fps_out <= 0:
        raise ValueError(f"fps_out must be positive, got {fps_out}")
    if duration is None:
        step = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0 / fps_out
        duration = float(ts[-1] - ts[0]) + step
    n_out = max(1, int(round(duration * fps_out)))
    t_out = ts[0] + np.arange(n_out) / fps_out
    right = np.clip(np.searchsorted(ts, t_out), 1, ts.size - 1) if ts.size > 1 else np.zeros(n_out, np.int64)
    if ts.size == 1:
        return right.astype(np.int64)
    left = right - 1
    choose_right = np.abs(ts[right] - t_out) < np.abs(t_out - ts[left])
    return np.where(choose_right, right, left).astype(np.int64)
