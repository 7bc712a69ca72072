"""Mesh-backend speed at 512x512 on this machine: rendering fps and end-to-end fps with a stage breakdown.

    python benchmarks/bench_mesh.py [--driver VIDEO] [--seconds 8]

Without --driver, a driving clip is made first by animating scikit-image's astronaut with a scripted
track (the project's own renderer), so the benchmark needs no downloaded data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


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
    tr.rotation[:, 1] = 0.25 * np.sin(2 * np.pi * t / 4)
    tr.rotation[:, 0] = 0.1 * np.sin(2 * np.pi * t / 3)
    tr.blink[:] = np.clip(1 - np.abs(t % 3 - 1.5) / 0.1, 0, 1)
    with VideoWriter(path, fps=25, quiet=True) as w:
        for i in range(n):
            w.write(r.render(tr, i))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", help="driving video (default: a generated one)")
    ap.add_argument("--source", help="portrait photo (default: scikit-image astronaut)")
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    import torch

    from real3d.backends.mesh import MeshRenderer
    from real3d.face.portrait import analyze_portrait
    from real3d.motion.track import MotionTrack
    from real3d.pipeline import AnimateOptions, Pipeline

    with tempfile.TemporaryDirectory() as tmp:
        driver = Path(args.driver) if args.driver else Path(tmp) / "driver.mp4"
        if not args.driver:
            make_driver(driver, args.seconds)
        if args.source:
            source = args.source
        else:
            from skimage import data

            source = data.astronaut()

        # rendering alone
        portrait = analyze_portrait(source)
        r = MeshRenderer(portrait)
        n = 100
        tr = MotionTrack.still(n, 25)
        tr.rotation[:, 1] = np.linspace(-0.3, 0.3, n)
        tr.blink[::10] = 1.0
        r.render(tr, 0)
        t0 = time.perf_counter()
        for i in range(n):
            r.render(tr, i)
        render_fps = n / (time.perf_counter() - t0)

        # end to end through the pipeline
        out = Path(tmp) / "out.mp4"
        t0 = time.perf_counter()
        res = Pipeline()(AnimateOptions(source=source, output=out, video=driver, quiet=True,
                                        max_seconds=args.seconds))
        total = time.perf_counter() - t0
    print(f"machine: {torch.get_num_threads()} threads; 512x512 output")
    print(f"rendering only:       {render_fps:6.1f} fps ({1000 / render_fps:.1f} ms/frame)")
    print(f"end to end:           {res.frames / total:6.1f} fps ({res.frames} frames in {total:.2f} s)")
    for k, v in res.timings.items():
        print(f"  {k:<20} {v:7.2f} s  ({1000 * v / res.frames:6.1f} ms/frame)")


if __name__ == "__main__":
    main()
