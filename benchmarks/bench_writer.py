"""Writer and watermark speed at 512x512, and watermark robustness/false positives.

    python benchmarks/bench_writer.py [--frames 150] [--real ../shared/data/real]

Prints: encode fps (libx264 veryfast crf 18, with and without marks, with AAC), the visible/invisible mark
embed cost and the detection cost per frame, and detection scores of marked vs unmarked video at crf 23 and
28 (real clips when `--real` holds *.mp4, else a synthetic talking-head-like clip).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import data

from real3d import provenance as pv
from real3d.io.audio import Audio
from real3d.io.video import iter_frames
from real3d.io.writer import VideoWriter
from real3d.precision import machine_summary

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def synthetic_frames(n: int, size: int = 512) -> list[np.ndarray]:
    """A still photo background with a moving central region (RGB uint8 size x size x 3)."""
    img = data.astronaut()
    out = []
    for i in range(n):
        f = img.copy()
        dy, dx = int(8 * np.sin(i / 3)), int(10 * np.cos(i / 4))
        f[160:352, 160:352] = np.roll(img[160:352, 160:352], (dy, dx), axis=(0, 1))
        out.append(f[:size, :size])
    return out


def encode(path: Path, frames: list[np.ndarray], crf: int, marks: bool, audio: Audio | None = None) -> float:
    """Encode and return frames per second (marks included when enabled)."""
    h, w = frames[0].shape[:2]
    t0 = time.perf_counter()
    with VideoWriter(
        path, fps=25, size=(w, h), crf=crf, audio=audio, frame_filter=pv.apply_marks if marks else None, quiet=True
    ) as wr:
        for f in frames:
            wr.write(f)
    return len(frames) / (time.perf_counter() - t0)


def per_frame_ms(fn, frames: list[np.ndarray]) -> float:
    fn(frames[0])  # warm the pattern cache
    t0 = time.perf_counter()
    for f in frames:
        fn(f)
    return (time.perf_counter() - t0) / len(frames) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--real", type=Path, default=REAL)
    args = ap.parse_args()
    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    frames = synthetic_frames(args.frames)
    audio = Audio((0.2 * np.sin(2 * np.pi * 220 * np.arange(16000 * 10) / 16000)).astype(np.float32), 16000)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.mp4"
        print(f"encode 512x512 x{len(frames)} (libx264 veryfast crf 18):")
        print(f"  no marks, no audio      {encode(out, frames, 18, marks=False):7.1f} fps")
        print(f"  marks + AAC audio       {encode(out, frames, 18, marks=True, audio=audio):7.1f} fps")
        luma = [f.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) for f in frames[:50]]
        print("per frame at 512x512:")
        print(f"  visible mark            {per_frame_ms(pv.add_visible_mark, frames[:50]):7.2f} ms")
        print(f"  invisible embed         {per_frame_ms(pv.embed, frames[:50]):7.2f} ms")
        print(f"  detection (luma)        {per_frame_ms(pv.bit_correlations, luma):7.2f} ms")

        clips = sorted(args.real.glob("*.mp4")) if args.real.is_dir() else []
        sources = {c.name: [f[:512, :512] for f in itertools.islice(iter_frames(c), 100)] for c in clips}
        sources = {k: v for k, v in sources.items() if v[0].shape[0] % 2 == 0 and v[0].shape[1] % 2 == 0}
        sources["synthetic"] = frames[:100]
        print("detection (100 frames): marked vs unmarked; present when bits >= 56 or score >= 6.5")
        for name, src in sources.items():
            for crf in (23, 28):
                encode(out, src, crf, marks=True)
                m = pv.verify_video(out)
                encode(out, src, crf, marks=False)
                u = pv.verify_video(out)
                print(
                    f"  {name:10s} crf {crf}: marked bits {m.bits_ok:2d}/64 score {m.score:6.1f} "
                    f"({'yes' if m.present else 'NO'}) | unmarked bits {u.bits_ok:2d}/64 score {u.score:5.1f} "
                    f"({'FALSE POSITIVE' if u.present else 'no'})"
                )


if __name__ == "__main__":
    main()
