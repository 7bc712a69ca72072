"""Mesh-backend speed at 512x512 on this machine: per-stage and end-to-end fps, wall and CPU time.

    python benchmarks/bench_mesh.py [--driver VIDEO] [--source PHOTO] [--seconds 8] [--repeats 3] [--no-audio]

Stages, each timed alone: decode + landmark tracking of the driving video, rendering, encoding (libx264 + the
provenance marks); then `Pipeline` end to end, video-driven and audio-driven (espeak-ng speech), each run
`--repeats` times (the median run is shown, with every run's fps: a shared or virtual machine varies). End to
end, the driving video is tracked in a background thread while the frames render, and frames are encoded in
another. Every figure comes as wall time and as CPU time of this process (all its threads): on a shared machine
wall time grows with the other jobs' load, CPU time much less, so compare CPU ms/frame across runs and read wall
fps as "under load" unless the load average printed first is below 1. The "CPU bound" figure is what the CPU
times allow on idle cores: frames / max(calling thread's CPU, process CPU / cores). It ignores waits between
threads, so a quiet run lands at or below it. Without --driver, a driving clip is made first by animating
scikit-image's astronaut with a scripted track (the project's own renderer), so nothing is downloaded.

To measure the AVX2 figures on an AVX-512 CPU, switch AVX-512 off where the libraries allow:
    ATEN_CPU_CAPABILITY=avx2 NPY_DISABLE_CPU_FEATURES=X86_V4,AVX512_ICL,AVX512_SPR \\
        OPENCV_CPU_DISABLE=AVX512-SKX,AVX512-CLX python benchmarks/bench_mesh.py
(MediaPipe's TFLite/XNNPACK kernels and libx264 pick their ISA themselves; the first line says what torch, NumPy
and OpenCV use.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from real3d.precision import machine_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_driver(path: Path, seconds: float) -> None:
    from skimage import data

    from real3d.backends.mesh import MeshRenderer
    from real3d.face.portrait import analyze_portrait
    from real3d.io.writer import VideoWriter
    from real3d.motion.track import MotionTrack

    n = int(seconds * 25)
    r = MeshRenderer(analyze_portrait(data.astronaut()))
    tr = MotionTrack.still(n, 25)
    t = np.arange(n) / 25
    tr.euler[:, 1] = 0.25 * np.sin(2 * np.pi * t / 4)
    tr.euler[:, 0] = 0.1 * np.sin(2 * np.pi * t / 3)
    tr.blink[:] = np.clip(1 - np.abs(t % 3 - 1.5) / 0.1, 0, 1)
    with VideoWriter(path, fps=25, quiet=True) as w:
        for i in range(n):
            w.write(r.render(tr, i))


def timed(fn: Callable[[], object]) -> tuple[float, float, float, object]:
    """(wall s, CPU s of this process, CPU s of the calling thread, result) of one call."""
    w, c, t = time.perf_counter(), time.process_time(), time.thread_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, time.thread_time() - t, out


def line(name: str, frames: int, wall: float, cpu: float, main: float) -> str:
    """Wall fps, process CPU per frame, the calling thread's CPU per frame, and the fps that the CPU figures
    allow on this many cores without other load: the calling thread is a serial path that no other thread
    shortens, and all threads together share the cores."""
    n_cpu = os.cpu_count() or 1
    bound = frames / max(main, cpu / n_cpu, 1e-9)
    return (
        f"{name:<28} {frames / wall:6.1f} fps wall ({1000 * wall / frames:5.1f} ms/frame), "
        f"CPU {1000 * cpu / frames:5.1f}"
        f" ms/frame (main thread {1000 * main / frames:5.1f}); CPU bound on {n_cpu} idle cores {bound:5.1f} fps"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--driver", help="driving video (default: a generated one)")
    ap.add_argument("--source", help="portrait photo (default: scikit-image astronaut)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--no-audio", action="store_true", help="skip the audio-driven end-to-end run")
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end runs per driver (the median is shown)")
    args = ap.parse_args()
    print(machine_summary(), flush=True)
    print(f"load average before: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs); 512x512 output", flush=True)

    from real3d.backends.mesh import MeshRenderer
    from real3d.face.portrait import analyze_portrait
    from real3d.io.writer import VideoWriter
    from real3d.motion.driving import track_video
    from real3d.motion.track import MotionTrack
    from real3d.pipeline import AnimateOptions, Pipeline
    from real3d.provenance import apply_marks

    with tempfile.TemporaryDirectory() as tmp:
        driver = Path(args.driver) if args.driver else Path(tmp) / "driver.mp4"
        if not args.driver:
            make_driver(driver, args.seconds)
        if args.source:
            source = args.source
        else:
            from skimage import data

            source = data.astronaut()
        n_drv = int(round(args.seconds * 25))

        # stage 1: decode + landmark tracking of the driving video
        wall, cpu, main, tracked = timed(lambda: track_video(driver, 25, n_drv))
        print(line("decode + tracking", len(tracked.landmarks), wall, cpu, main), flush=True)

        # stage 2: rendering alone
        portrait = analyze_portrait(source)
        r = MeshRenderer(portrait)
        n = 100
        tr = MotionTrack.still(n, 25)
        tr.euler[:, 1] = np.linspace(-0.3, 0.3, n)
        tr.blink[::10] = 1.0
        r.render(tr, 0)
        wall, cpu, main, frames = timed(lambda: [r.render(tr, i) for i in range(n)])
        print(line("rendering", n, wall, cpu, main), flush=True)

        # stage 3: encoding (libx264 + both provenance marks), the rendered frames again
        def encode() -> None:
            with VideoWriter(Path(tmp) / "enc.mp4", fps=25, size=(512, 512), frame_filter=apply_marks, quiet=True) as w:
                for f in frames:
                    w.write(f)

        wall, cpu, main, _ = timed(encode)
        print(line("encoding (marks + x264)", n, wall, cpu, main), flush=True)

        # end to end through the pipeline
        runs = [("end to end, video-driven", dict(video=driver))]
        if not args.no_audio and shutil.which("espeak-ng"):
            from bench_long_audio import make_speech

            wav = Path(tmp) / "speech.wav"
            make_speech(wav, args.seconds / 60)
            runs.append(("end to end, audio-driven", dict(audio=wav)))
        elif not args.no_audio:
            print("audio-driven run skipped: needs espeak-ng (apt-get install espeak-ng)")
        for name, drive in runs:
            out = Path(tmp) / "out.mp4"
            opts = AnimateOptions(source=source, output=out, quiet=True, max_seconds=args.seconds, **drive)
            results = sorted((timed(lambda: Pipeline()(opts)) for _ in range(args.repeats)), key=lambda r: r[0])
            wall, cpu, main, res = results[len(results) // 2]  # the median run by wall time
            spread = ", ".join(f"{r[3].frames / r[0]:.1f}" for r in results)
            print(line(name, res.frames, wall, cpu, main) + f" [median of {args.repeats}: {spread} fps]", flush=True)
            for k, v in res.timings.items():
                print(f"  {k:<26} {v:7.2f} s wall ({1000 * v / res.frames:6.1f} ms/frame)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
