"""The one way to run real3d: `Pipeline()(AnimateOptions(...))`. The CLI and the web app only adapt it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from real3d.errors import Cancelled, InputError
from real3d.motion.track import MotionTrack, ping_pong_indices

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".gif"}
DRIVER_MAX_SIDE = 640
"""Driver frames are downscaled to this longer side before landmark tracking (speed; precision is ample)."""


@dataclass
class AnimateOptions:
    """Everything one run needs."""

    source: Path | str | np.ndarray
    """The portrait photo (path or RGB uint8 array)."""
    output: Path | str
    """Output video path (.mp4/.mov/.mkv)."""
    video: Path | str | None = None
    """Driving video: expression and head pose (and its audio, if any)."""
    audio: Path | str | None = None
    """Driving speech (any audio file, or a video's audio track)."""
    pose_video: Path | str | None = None
    """Take head pose from this video instead (ping-pong when shorter)."""
    background: Path | str | np.ndarray | None = None
    """Replace the background with this image (default: the source's own, inpainted)."""
    still: bool = False
    """Keep the source's head pose (no head motion)."""
    fps: float = 25.0
    """Output frame rate."""
    seed: int = 0
    """Seed for everything random (blinks, idle motion)."""
    face_index: int = 0
    """Which face of the photo to animate (0 = largest)."""
    framing: Literal["auto", "crop", "full"] = "auto"
    """How the photo becomes 512x512: head-and-shoulders crop, the whole photo, or auto."""
    mouth_amp: float = 0.45
    """Mouth amplitude for audio driving (official default 0.45 = neutral)."""
    blink: Literal["natural", "periodic", "none"] = "natural"
    """Blink schedule for audio driving."""
    visible_watermark: bool = True
    """Draw the small 'AI-generated' label."""
    invisible_watermark: bool = True
    """Embed the invisible provenance watermark (checked by `real3d verify`)."""
    max_seconds: float | None = None
    """Stop after this many seconds of output (None = the driver's full length)."""
    crf: int = 18
    """x264 quality (lower = better, larger)."""
    quiet: bool = False
    """No progress bars."""
    backend: Literal["mesh", "neural"] = "mesh"
    """mesh = weights-free (default); neural = the paper's networks with your checkpoints."""
    checkpoints: Path | str | None = None
    """Neural: folder with the official (or converted) checkpoints; else $REAL3D_CHECKPOINTS / config file."""
    bfm: Path | str | None = None
    """Neural: the BFM folder; else $REAL3D_BFM / config file."""
    hubert: Path | str | None = None
    """Neural, audio driving: local facebook/hubert-large-ls960-ft snapshot; else $REAL3D_HUBERT / config file."""
    segmenter_model: Path | str | None = None
    """Neural: MediaPipe selfie_multiclass_256x256.tflite (optional)."""
    torso_ckpt: Path | str | None = None
    """Neural: the torso-model checkpoint folder itself (overrides the one found under `checkpoints`)."""
    a2m_ckpt: Path | str | None = None
    """Neural: the A2M checkpoint folder itself (overrides the one found under `checkpoints`)."""
    neural: object | None = None
    """Neural: a `real3d.backends.neural.NeuralConfig` (batch size, sampling, temperature, device, dtype, debug)."""


@dataclass(frozen=True)
class Progress:
    """One progress report of a run, passed to `Pipeline.__call__`'s `on_progress` callback."""

    stage: Literal["source", "driver", "render", "done"]
    """source = portrait analysis, driver = reading/analysing the driver, render = frames, done = file written."""
    done: int
    """Units of this stage finished (frames for render; 0 or 1 for the others)."""
    total: int
    """Units of this stage in all."""
    frame: np.ndarray | None = None
    """render: the frame just rendered (RGB uint8, before the watermarks), for a live preview."""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass
class AnimateResult:
    """What a run produced."""

    output: Path
    frames: int
    fps: float
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage."""

    @property
    def duration(self) -> float:
        return self.frames / self.fps


class Pipeline:
    """Photo + driver -> talking-portrait video (mesh backend)."""

    def __init__(self, mesh_config=None) -> None:
        self.mesh_config = mesh_config

    def __call__(self, opts: AnimateOptions, on_progress: ProgressCallback | None = None,
                 stop: threading.Event | None = None) -> AnimateResult:
        """Run `opts`. `on_progress` gets a `Progress` per stage and per frame; setting `stop` ends the run
        between frames with `Cancelled` and leaves no output."""
        self._on_progress = on_progress
        self._stop = stop
        from real3d.backends.mesh import MeshRenderer
        from real3d.face.landmarks import FaceAnalyzer
        from real3d.face.portrait import analyze_portrait
        from real3d.io.writer import check_writable

        timings: dict[str, float] = {}
        self._report("source", 0, 1)
        out = check_writable(opts.output)
        if opts.video is None and opts.audio is None:
            raise InputError("nothing drives the portrait; give --video DRIVER.mp4 or --audio SPEECH.wav")
        if opts.video is not None and opts.audio is not None:
            raise InputError("give either --video or --audio, not both (use --pose-video for head pose from a video)")
        if not opts.fps > 0 or opts.fps > 120:
            raise InputError(f"--fps {opts.fps} is out of range; use a frame rate between 1 and 120")
        t0 = time.perf_counter()
        analyzer = FaceAnalyzer()
        try:
            portrait = analyze_portrait(
                opts.source, face_index=opts.face_index, background=opts.background, framing=opts.framing, analyzer=analyzer
            )
            timings["source_analysis"] = time.perf_counter() - t0
            self._report("source", 1, 1)
            self._report("driver", 0, 1)
            if opts.backend == "neural":
                return self._neural(opts, out, portrait, analyzer, timings)
            if opts.backend != "mesh":
                raise InputError(f"unknown backend {opts.backend!r}; use 'mesh' or 'neural'")
            t0 = time.perf_counter()
            n_frames, chunks, audio = self._driver(opts, portrait)
            timings["driver_analysis"] = time.perf_counter() - t0
            self._report("driver", 1, 1)
        finally:
            analyzer.close()
        if opts.max_seconds is not None:
            n_frames = min(n_frames, max(1, int(round(opts.max_seconds * opts.fps))))
        renderer = MeshRenderer(portrait, self.mesh_config)
        return self._write(opts, out, portrait.image.shape[:2], audio, n_frames,
                           (renderer.render(chunk, i) for chunk in chunks for i in range(len(chunk))), timings)

    def _write(self, opts: AnimateOptions, out: Path, size: tuple[int, int], audio, n_frames: int, frames,
               timings: dict[str, float]) -> AnimateResult:
        """Stream `frames` (an iterator of RGB uint8 arrays) into the output, timing render vs encode."""
        from real3d.io.writer import VideoWriter

        t_render = t_write = 0.0
        written = 0
        with VideoWriter(
            out,
            fps=opts.fps,
            size=(size[1], size[0]),
            audio=audio,
            crf=opts.crf,
            visible_watermark=opts.visible_watermark,
            invisible_watermark=opts.invisible_watermark,
            total=n_frames,
            quiet=opts.quiet,
        ) as writer:
            it = iter(frames)
            while written < n_frames:
                self._check_stop()
                a = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                b = time.perf_counter()
                writer.write(frame)
                t_write += time.perf_counter() - b
                t_render += b - a
                written += 1
                self._report("render", written, n_frames, frame)
            self._check_stop()
        self._report("done", 1, 1)
        timings["render"] = timings.get("render", 0.0) + t_render
        timings["encode"] = t_write
        return AnimateResult(output=out, frames=written, fps=opts.fps, timings=timings)

    def _report(self, stage: str, done: int, total: int, frame: np.ndarray | None = None) -> None:
        self._check_stop()
        cb = getattr(self, "_on_progress", None)
        if cb is not None:
            cb(Progress(stage, done, total, frame))

    def _check_stop(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None and stop.is_set():
            raise Cancelled("the run was stopped on request; no output was written")

    # ------------------------------------------------------------------ neural backend
    def _neural(self, opts: AnimateOptions, out: Path, portrait, analyzer, timings: dict[str, float]) -> AnimateResult:
        import torch

        from real3d.assets import NeuralAssets
        from real3d.backends.neural import NeuralBackend, NeuralConfig
        from real3d.face.cameras import PoseSequence, driving_pose
        from real3d.io.audio import has_audio, load_audio

        cfg = opts.neural if opts.neural is not None else NeuralConfig()
        need_audio = opts.audio is not None
        explicit = opts.torso_ckpt is not None and (opts.a2m_ckpt is not None or not need_audio)
        assets = NeuralAssets.locate(opts.checkpoints if opts.checkpoints is not None or not explicit else opts.torso_ckpt,
                                     opts.bfm, opts.hubert, opts.segmenter_model, need_hubert=need_audio)
        backend = NeuralBackend(assets, cfg, need_audio=need_audio, torso_dir=opts.torso_ckpt, a2m_dir=opts.a2m_ckpt)
        src = backend.prepare_source(portrait)
        limit = None if opts.max_seconds is None else max(1, int(round(opts.max_seconds * opts.fps)))
        pose = None
        if opts.audio is not None:
            speech = load_audio(opts.audio, sample_rate=16000, mono=True)
            exp25 = backend.expression_from_audio(speech.samples, opts.mouth_amp, opts.seed)
            n = max(1, int(round(speech.duration * opts.fps)))
            idx = np.minimum(np.round(np.arange(n) * 25.0 / opts.fps).astype(np.int64), exp25.shape[0] - 1)
            exp = exp25[torch.from_numpy(idx)]
            audio = opts.audio  # the writer decodes the soundtrack piece by piece
        else:
            lms, size = driver_landmarks(opts.video, opts.fps, analyzer, opts.quiet, limit)
            fit = backend.motion_from_landmarks(lms, size)
            exp = fit.exp
            n = exp.shape[0]
            if not opts.still:
                pose = PoseSequence(euler=fit.euler, trans=fit.trans)
            audio = opts.video if has_audio(opts.video) else None
        if opts.pose_video is not None:
            lms, size = driver_landmarks(opts.pose_video, opts.fps, analyzer, opts.quiet, limit)
            pfit = backend.motion_from_landmarks(lms, size)
            pose = PoseSequence(euler=pfit.euler, trans=pfit.trans)
        if opts.still:
            pose = None
        if limit is not None:
            n = min(n, limit)
            exp = exp[:n]
        poses = driving_pose(src.euler, src.trans, n, pose, map_to_init=cfg.map_to_init_pose)
        timings.update(src.timings)
        frames = backend.frames(src, exp, poses, seed=opts.seed)
        size = (backend.resolution, backend.resolution * (4 if cfg.out_mode == "debug" else 1))
        result = self._write(opts, out, size, audio, n, frames, timings)
        result.timings.update(backend.timings)
        return result

    # ------------------------------------------------------------------ drivers
    def _driver(self, opts: AnimateOptions, portrait) -> tuple[int, Iterator[MotionTrack], object]:
        from real3d.io.audio import has_audio, load_audio

        limit = None if opts.max_seconds is None else max(1, int(round(opts.max_seconds * opts.fps)))

        if opts.video is not None:
            track = video_track(opts.video, portrait.canonical, opts.fps, quiet=opts.quiet, max_frames=limit)
            audio = opts.video if has_audio(opts.video) else None  # streamed by the writer
        else:
            from real3d.motion.from_audio import AudioDriver

            speech = load_audio(opts.audio, sample_rate=16000, mono=True)
            driver = AudioDriver(
                speech.samples,
                portrait.canonical,
                fps=opts.fps,
                mouth_amp=opts.mouth_amp,
                blink=opts.blink,
                still=opts.still,
                seed=opts.seed,
            )
            audio = opts.audio  # streamed by the writer
            n = len(driver)
            chunks: Iterator[MotionTrack] = driver.chunks(250)
            if opts.pose_video is not None:
                pose = video_track(opts.pose_video, portrait.canonical, opts.fps, quiet=opts.quiet, max_frames=limit)
                chunks = _with_pose(chunks, pose)
            return n, chunks, audio
        if opts.pose_video is not None:
            pose = video_track(opts.pose_video, portrait.canonical, opts.fps, quiet=opts.quiet, max_frames=limit)
            track = track.with_pose_of(pose)
        if opts.still:
            track = track.without_pose()
        return len(track), iter([track]), audio


def video_track(path, source_canonical: np.ndarray, fps: float, quiet: bool = False,
                max_frames: int | None = None) -> MotionTrack:
    """Retargeted MotionTrack of a driving video, resampled to `fps` (at most `max_frames` frames); its own
    tracker, so tracking state never carries over from another video."""
    from real3d.motion.from_video import track_from_landmarks

    lms, _ = driver_landmarks(path, fps, None, quiet, max_frames)
    track = track_from_landmarks(lms, source_canonical, fps)
    track.meta["driver"] = str(path)
    return track


def driver_landmarks(path, fps: float, analyzer, quiet: bool = False, max_frames: int | None = None):
    """([T,478,3] landmarks with missing frames interpolated, (height, width)) of a driving video at `fps`
    (`analyzer` None: a fresh tracker)."""
    from itertools import islice

    from tqdm import tqdm

    from real3d.io.video import iter_frames, probe_video
    from real3d.motion.from_video import fill_missing_landmarks, video_landmarks

    info = probe_video(path)
    total = max(1, int(round(info.duration * fps)))
    if max_frames is not None:
        total = min(total, max_frames)
    frames = islice(iter_frames(path, max_size=DRIVER_MAX_SIDE, fps=fps), total)
    sizes: list[tuple[int, int]] = []

    def tracked():
        for fr in tqdm(frames, total=total, desc="tracking driver", unit="frame", disable=quiet, leave=False):
            if not sizes:
                sizes.append(fr.shape[:2])
            yield fr

    lms = fill_missing_landmarks(video_landmarks(tracked(), analyzer).astype(np.float64))
    return lms.astype(np.float32), sizes[0]


def _with_pose(chunks: Iterator[MotionTrack], pose: MotionTrack) -> Iterator[MotionTrack]:
    """Give streamed chunks the head pose of `pose`, ping-ponged over the whole stream."""
    start = 0
    for c in chunks:
        idx = ping_pong_indices(start + len(c), len(pose))[start:]
        start += len(c)
        yield replace(c, rotation=pose.rotation[idx].copy(), translation=pose.translation[idx].copy())
