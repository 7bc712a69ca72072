"""Writes docs/images/training_val_strip.jpg: held-out validation frames early vs late in a training run.

    python docs/training_strip.py RUN_S2 RUN_S3 [--early 250] [--late 6000,8000] [--ema] [--rows 4] [-o OUT.jpg]

Reads the validation strips the engine writes (`RUN/samples/val_<step>[_ema].png`, rows source | target |
prediction, the same held-out pairs at every step; only the pairs of `data.strip_clips` when the run set it) and
lays out, per stage, source | target | prediction at the early step | prediction at the late step, each tile
enlarged 3x (nearest) so the 32 px tiny-model frames stay visible. The committed image comes from a run whose
strips show only the astronaut clips (scikit-image's photo animated by the mesh backend from espeak-ng speech):
docs/training.md, "The publishable run".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SCALE = 3


def _tiles(path: Path) -> list[list[np.ndarray]]:
    """val strip -> rows of [source, target, prediction] tiles."""
    img = np.asarray(Image.open(path).convert("RGB"))
    side = img.shape[1] // 3
    return [[img[r : r + side, c * side : (c + 1) * side] for c in range(3)] for r in range(0, img.shape[0], side)]


def stage_panel(run: Path, early: int, late: int, ema: bool, title: str, n_rows: int) -> np.ndarray:
    suffix = "_ema" if ema else ""
    a = _tiles(run / "samples" / f"val_{early:08d}{suffix}.png")
    b = _tiles(run / "samples" / f"val_{late:08d}{suffix}.png")
    pick = np.unique(np.linspace(0, len(a) - 1, min(n_rows, len(a))).round().astype(int))
    rows = [np.concatenate([a[i][0], a[i][1], a[i][2], b[i][2]], 1) for i in pick]
    body = np.concatenate(rows, 0).repeat(SCALE, 0).repeat(SCALE, 1)
    head = Image.new("RGB", (body.shape[1], 34), "white")
    draw = ImageDraw.Draw(head)
    draw.text((4, 2), title, fill="black")
    w = body.shape[1] // 4
    for i, name in enumerate(("source", "target", f"step {early}", f"step {late}")):
        draw.text((i * w + 4, 18), name, fill="black")
    return np.concatenate([np.asarray(head), body], 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (stage 2, stage 3)")
    ap.add_argument("--early", type=int, default=250)
    ap.add_argument("--late", default="6000,8000", help="late step per run, comma-separated")
    ap.add_argument("--ema", action="store_true", help="use the EMA's strips")
    ap.add_argument("--rows", type=int, default=4, help="pairs shown per stage (spread over the strip's rows)")
    ap.add_argument("-o", "--out", type=Path, default=Path(__file__).parent / "images" / "training_val_strip.jpg")
    args = ap.parse_args()
    lates = [int(x) for x in args.late.split(",")]
    panels = []
    for i, (run, late) in enumerate(zip(args.runs, lates)):
        title = f"stage {i + 2}" + (" (EMA)" if args.ema else "")
        panels.append(stage_panel(run, args.early, late, args.ema, title, args.rows))
    h = max(p.shape[0] for p in panels)
    gap = np.full((h, 12, 3), 255, np.uint8)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    out = np.concatenate([x for p in padded for x in (p, gap)][:-1], 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(args.out, quality=85)
    print(f"wrote {args.out} ({out.shape[1]}x{out.shape[0]})")


if __name__ == "__main__":
    main()
