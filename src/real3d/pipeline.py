"""The one way to run real3d: `Pipeline()(AnimateOptions(...))`. The CLI, the web app and batch runs adapt it.

The pipeline owns everything that is not rendering: checking the options, reading the portrait and the
driver (video, speech, pose video, still head), the frame limit, streaming frames into the writer with
the provenance marks, progress reports and stopping. Rendering belongs to a `real3d.backends.base.Backend`
(mesh or neural), chosen by `AnimateOptions.backend` and called through that interface only.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from real3d.assets import NeuralAssets
from real3d.backends.base import Backend
from real3d.backends.mesh import MeshBackend, MeshConfig
from real3d.backends.neural import NeuralBackend, NeuralConfig
from real3d.errors import Cancelled, InputError
from real3d.face.framing import FramingMode
from real3d.face.portrait import analyze_portrait
from real3d.io.audio import has_audio
from real3d.io.video import VIDEO_SUFFIXES, first_frame
from real3d.io.writer import VideoWriter, check_writable
from real3d.motion.blink import BlinkMode
from real3d.motion.driving import Driving, DrivingVideo, read_speech, track_video
from real3d.provenance import apply_marks

log = logging.getLogger(__name__)

BackendName = Literal["mesh", "neural"]


@dataclass
class AnimateOptions:
    """Everything one run needs: every option of `real3d animate`, by the same names."""

    source: Path | str | np.ndarray
    """The portrait photo (path or RGB uint8 array); a video path uses its first frame."""
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
    """Seed for everything random (blinks, idle motion, A2M sampling)."""
    face_index: int = 0
    """Which face of the photo to animate (0 = largest)."""
    framing: FramingMode = "auto"
    """How the photo becomes 512x512: head-and-shoulders crop, the whole photo, or auto."""
    mouth_amp: float = 0.45
    """Mouth amplitude for audio driving (official default 0.45 = neutral)."""
    blink: BlinkMode = "natural"
    """Blink schedule for audio driving: natural, periodic (the official one, every 5 s) or none."""
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
    backend: BackendName = "mesh"
    """mesh = weights-free (default); neural = the paper's networks with your checkpoints."""
    checkpoints: Path | str | None = None
    """Neural: folder with the official (or converted) checkpoints; else $REAL3D_CHECKPOINTS / config file."""
    bfm: Path | str | None = None
    """Neural: the BFM folder; else $REAL3D_BFM / config file."""
    hubert: Path | str | None = None
    """Neural, audio driving: local facebook/hubert-large-ls960-ft snapshot; else $REAL3D_HUBERT / config file."""
    segmenter_model: Path | str | None = None
    """Neural: MediaPipe selfie_multiclass_256x256.tflite (optional)."""
    generator_ckpt: Path | str | None = None
    """Neural: the generator checkpoint folder itself (official name `torso_ckpt`; overrides the one found under
    `checkpoints`)."""
    a2m_ckpt: Path | str | None = None
    """Neural: the A2M checkpoint folder itself (overrides the one found under `checkpoints`)."""
    temperature: float = 0.2
    """Neural, audio driving: A2M prior temperature."""
    sampling: Literal["deterministic", "stochastic"] = "deterministic"
    """Neural: volume sampling, deterministic (no flicker) or the official random jitter."""
    out_mode: Literal["final", "debug"] = "final"
    """Neural: `debug` adds PNCC, raw render and depth panels beside the result (the official concat_debug)."""
    batch_size: int = 4
    """Neural: frames per network call."""
    device: str = "cpu"
    """Neural: torch device, e.g. cuda."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Neural: autocast dtype of the networks; auto = bfloat16 where the CPU/GPU computes it natively, else
    float32 (= parity); an explicit type the device only emulates runs ~50-100x slower and logs a warning."""
    map_to_init_pose: bool = True
    """Neural: shift the driving poses so the first frame has the source's pose (official default)."""

    @classmethod
    def from_official(cls, **args: Any) -> AnimateOptions:
        """Options from the official `inference/real3d_infer.py` argument names (and any of ours).

        `drv_aud` drives like `video` when it is a video and like `audio` otherwise; `drv_pose="static"` is
        `still`; `blink_mode="period"` is `blink="periodic"`; `out_mode="concat_debug"` is `debug`;
        `map_to_init_pose` may be the official strings "True"/"False". `low_memory_usage` and
        `min_face_area_percent` are accepted and have no effect (frames always stream; framing is automatic).
        """
        a = dict(args)
        renames = {
            "src_img": "source",
            "bg_img": "background",
            "out_name": "output",
            "blink_mode": "blink",
            "drv_pose": "pose_video",
            "torso_ckpt": "generator_ckpt",
        }
        for old, new in renames.items():
            if old in a:
                value = a.pop(old)
                if value not in (None, "") and a.get(new) in (None, ""):
                    a[new] = value
        drv = a.pop("drv_aud", None)
        if drv:
            kind = "video" if Path(str(drv)).suffix.lower() in VIDEO_SUFFIXES else "audio"
            if a.get(kind) in (None, ""):
                a[kind] = drv
        if a.get("pose_video") == "static":
            a["pose_video"], a["still"] = None, True
        if a.get("blink") == "period":
            a["blink"] = "periodic"
        if a.get("out_mode") == "concat_debug":
            a["out_mode"] = "debug"
        if isinstance(a.get("map_to_init_pose"), str):
            a["map_to_init_pose"] = a["map_to_init_pose"].lower() == "true"
        for ignored in ("low_memory_usage", "min_face_area_percent"):
            a.pop(ignored, None)
        if a.get("head_ckpt"):
            raise InputError(
                "--head_ckpt (the head-only model) is not supported; give --torso_ckpt (the full generator)"
            )
        a.pop("head_ckpt", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(a) - names)
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(names))}")
        return cls(**a)

    def max_frames(self) -> int | None:
        """`max_seconds` in frames (at least 1), or None."""
        return None if self.max_seconds is None else max(1, int(round(self.max_seconds * self.fps)))


@dataclass(frozen=True)
class Progress:
    """One progress report of a run, passed to `Pipeline.__call__`'s `on_progress` callback."""

    stage: Literal["source", "driver", "render", "done"]
    """source = portrait analysis, driver = reading/analysing the driver, render = frames, done = file written."""
    done: int
    """Units of this stage finished (frames for render and for a tracked driving video; else 0 or 1)."""
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


class _Reporter:
    """Progress callback + stop flag of one run."""

    def __init__(self, callback: ProgressCallback | None, stop: threading.Event | None) -> None:
        self.callback = callback
        self.stop = stop

    def __call__(self, stage: str, done: int, total: int, frame: np.ndarray | None = None) -> None:
        self.check()
        if self.callback is not None:
            self.callback(Progress(stage, done, total, frame))  # type: ignore[arg-type]

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Cancelled("the run was stopped on request; no output was written")


class Pipeline:
    """Photo + driver -> talking-portrait video, with the backend the options name."""

    def __init__(self, mesh_config: MeshConfig | None = None) -> None:
        self.mesh_config = mesh_config

    def backend(self, opts: AnimateOptions) -> Backend:
        """The renderer `opts.backend` names, configured from `opts` (neural: locates and loads your weights)."""
        if opts.backend == "mesh":
            return MeshBackend(self.mesh_config)
        if opts.backend == "neural":
            need_audio = opts.audio is not None
            explicit = opts.generator_ckpt is not None and (opts.a2m_ckpt is not None or not need_audio)
            root = opts.checkpoints if opts.checkpoints is not None or not explicit else opts.generator_ckpt
            assets = NeuralAssets.locate(root, opts.bfm, opts.hubert, opts.segmenter_model, need_hubert=need_audio)
            config = NeuralConfig(
                batch_size=opts.batch_size,
                sampling=opts.sampling,
                temperature=opts.temperature,
                map_to_init_pose=opts.map_to_init_pose,
                out_mode=opts.out_mode,
                device=opts.device,
                dtype=opts.dtype,
            )
            return NeuralBackend(
                assets, config, need_audio=need_audio, generator_dir=opts.generator_ckpt, a2m_dir=opts.a2m_ckpt
            )
        raise InputError(f"unknown backend {opts.backend!r}; use 'mesh' or 'neural'")

    def __call__(
        self, opts: AnimateOptions, on_progress: ProgressCallback | None = None, stop: threading.Event | None = None
    ) -> AnimateResult:
        """Run `opts`. `on_progress` gets a `Progress` per stage and per frame; setting `stop` ends the run
        between frames with `Cancelled` and leaves no output."""
        report = _Reporter(on_progress, stop)
        _check(opts)
        out = check_writable(opts.output)
        timings: dict[str, float] = {}
        report("source", 0, 1)
        t0 = time.perf_counter()
        portrait = analyze_portrait(
            _source_image(opts.source), face_index=opts.face_index, background=opts.background, framing=opts.framing
        )
        timings["source_analysis"] = time.perf_counter() - t0
        backend = self.backend(opts)
        source = backend.prepare(portrait)
        report("source", 1, 1)
        report("driver", 0, 1)
        t0 = time.perf_counter()
        driving = read_driving(opts, lambda done, total: report("driver", done, total))
        motion = backend.motion(source, driving)
        timings["driver_analysis"] = time.perf_counter() - t0
        report("driver", 1, 1)
        soundtrack = opts.audio if opts.audio is not None else (opts.video if has_audio(opts.video) else None)
        result = self._write(
            opts,
            out,
            backend.frame_size(source),
            soundtrack,
            len(motion),
            backend.frames(source, motion),
            timings,
            report,
        )
        result.timings.update(backend.timings)
        return result

    def _write(
        self,
        opts: AnimateOptions,
        out: Path,
        size: tuple[int, int],
        soundtrack: Path | str | None,
        n_frames: int,
        frames: Iterator[np.ndarray],
        timings: dict[str, float],
        report: _Reporter,
    ) -> AnimateResult:
        """Stream `frames` into the output (the writer streams the soundtrack), timing render vs encode."""
        t_render = t_write = 0.0
        written = 0
        marks = partial(apply_marks, visible=opts.visible_watermark, invisible=opts.invisible_watermark)
        with VideoWriter(
            out,
            fps=opts.fps,
            size=(size[1], size[0]),
            audio=soundtrack,
            crf=opts.crf,
            frame_filter=marks,
            total=n_frames,
            quiet=opts.quiet,
        ) as writer:
            it = iter(frames)
            while written < n_frames:
                report.check()
                a = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                b = time.perf_counter()
                writer.write(frame)
                t_write += time.perf_counter() - b
                t_render += b - a
                written += 1
                report("render", written, n_frames, frame)
            report.check()
        report("done", 1, 1)
        timings["render"] = timings.get("render", 0.0) + t_render
        timings["encode"] = t_write
        return AnimateResult(output=out, frames=written, fps=opts.fps, timings=timings)


def _check(opts: AnimateOptions) -> None:
    """Option errors that need no file: fail before any work."""
    if opts.video is None and opts.audio is None:
        raise InputError("nothing drives the portrait; give --video DRIVER.mp4 or --audio SPEECH.wav")
    if opts.video is not None and opts.audio is not None:
        raise InputError("give either --video or --audio, not both (use --pose-video for head pose from a video)")
    if not 0 < opts.fps <= 120:
        raise InputError(f"--fps {opts.fps} is out of range; use a frame rate between 1 and 120")
    if opts.blink not in ("natural", "periodic", "none"):
        raise InputError(f"unknown blink mode {opts.blink!r}; use natural, periodic or none")


def _source_image(source: Path | str | np.ndarray) -> Path | str | np.ndarray:
    """The portrait itself, or the first frame when `source` names a video."""
    if not isinstance(source, np.ndarray) and Path(source).suffix.lower() in VIDEO_SUFFIXES:
        return first_frame(source)
    return source


def read_driving(opts: AnimateOptions, progress: Callable[[int, int], None] | None = None) -> Driving:
    """Read the driver `opts` names: speech samples, or the driving video (opened; the backend tracks it), and
    the landmarks of the pose video; `progress(done, total)` is called per tracked video frame (the mesh backend
    tracks a driving video while it renders and reports render progress instead)."""
    limit = opts.max_frames()
    pose = None
    if opts.pose_video is not None:
        step = _TrackingBar("pose video", opts.quiet, progress)
        try:
            pose = track_video(opts.pose_video, opts.fps, limit, step)
        finally:
            step.close()
    video = None
    if opts.video is not None:
        video = DrivingVideo.open(opts.video, opts.fps, limit, _TrackingBar("driver", opts.quiet, progress))
    return Driving(
        fps=opts.fps,
        speech=read_speech(opts.audio) if opts.audio is not None else None,
        video=video,
        pose=pose,
        still=opts.still,
        max_frames=limit,
        mouth_amp=opts.mouth_amp,
        blink=opts.blink,
        seed=opts.seed,
    )


class _TrackingBar:
    """Per-frame tracking progress: a terminal bar (unless quiet) and the caller's callback. The bar closes
    when the last frame is reported (or on `close`)."""

    def __init__(self, what: str, quiet: bool, progress: Callable[[int, int], None] | None) -> None:
        self.what, self.quiet, self.progress = what, quiet, progress
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(desc=f"tracking {self.what}", unit="frame", disable=self.quiet, leave=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        if self.progress is not None:
            self.progress(done, total)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
