"""`real3d prepare` throughput and memory: frames/s and the peak RSS of a prepare run on talking-head clips.

    python benchmarks/bench_prepare.py [--video VIDEO] [--seconds 20] [--clips 1] [--workers 1] [--size 512]
                                       [--bfm DIR]

Without --video, a clip is made first: scikit-image's astronaut animated with a scripted head track by the
project's own renderer, centred on a 1280x720 canvas (the size of a typical talking-head upload), so nothing is
downloaded. `--clips K` prepares K copies of it (links under different names) with `--workers` processes, the way
a large set is prepared. Without --bfm a synthetic BFM is written (the 3DMM fit uses its 468 keypoints only, so
it costs what the real BFM costs). `real3d prepare` runs as a child process; printed: the CPU, the load average,
frames, wall seconds, frames/s over all clips and the child's peak RSS (the largest process of the run: with
workers, the largest worker).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from real3d.precision import machine_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_clip(path: Path, seconds: float, work: Path) -> None:
    """The bench_mesh driving clip (512x512), centred on a 1280x720 grey canvas."""
    from bench_mesh import make_driver

    small = work / "small.mp4"
    make_driver(small, seconds)
    src = av.open(str(small))
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "20"}
    canvas = np.full((720, 1280, 3), 128, np.uint8)
    for frame in src.decode(video=0):
        canvas[:, 280:1000] = cv2.resize(frame.to_ndarray(format="rgb24"), (720, 720), interpolation=cv2.INTER_CUBIC)
        out.mux(stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")))
    out.mux(stream.encode(None))
    out.close()
    src.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, help="a talking-head clip (default: made from the astronaut)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the made clip")
    ap.add_argument("--clips", type=int, default=1, help="copies of the clip to prepare")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bfm", type=Path, help="BFM folder (default: a synthetic one)")
    args = ap.parse_args()
    print(machine_summary())
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="real3d-bench-prepare-") as tmp:
        work = Path(tmp)
        video = args.video
        if video is None:
            video = work / "clip.mp4"
            make_clip(video, args.seconds, work)
        bfm = args.bfm
        if bfm is None:
            from real3d.face.bfm_synthetic import write_synthetic_bfm

            bfm = write_synthetic_bfm(work / "bfm")
        clips = work / "clips"
        clips.mkdir()
        for k in range(args.clips):
            os.symlink(video.resolve(), clips / f"clip{k}{video.suffix}")
        cmd = [sys.executable, "-m", "real3d.cli", "prepare", str(clips), "-o", str(work / "records")]
        cmd += ["--bfm", str(bfm), "--size", str(args.size), "--workers", str(args.workers)]
        t = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if run.returncode != 0:
            sys.exit(f"prepare failed ({run.returncode}):\n{run.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        from real3d.train.records import RecordIndex

        frames = sum(c.num_frames for c in RecordIndex(work / "records").clips)
        print(
            f"prepare: {args.clips} clip(s), {frames} frames at {args.size} px, {args.workers} worker(s): "
            f"{wall:.1f} s wall (process start-up included), {frames / wall:.1f} frames/s, peak RSS {peak:.2f} GiB"
        )


if __name__ == "__main__":
    main()
