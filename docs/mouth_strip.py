"""Writes docs/mouth_strip.jpg: mouth shapes of the mesh backend for a closed-mouth and an open-mouth source.

Columns: the source photo, the audio driver's rest pose in silence (lips pressed together), an open vowel (/a/), a
rounded one (/u/), a spread one (/i/) and f/v (lower lip to the upper teeth). Rows: a closed-mouth photo
(scikit-image's astronaut re-rendered with her lips together: no teeth in the photo, so the renderer draws teeth,
cavity and tongue) and the astronaut as photographed (a smile with teeth: her own teeth are used), or any photos
given on the command line (`python docs/mouth_strip.py [PHOTO ...] [-o OUT.jpg]`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from real3d.backends.mesh import MeshRenderer
from real3d.face.portrait import analyze_portrait
from real3d.motion.mouth import (
    JAW,
    LABIODENTAL,
    MOUTH_PARAMS,
    PRESS,
    ROUND,
    SPREAD,
    build_rig,
    closed_mouth,
    mouth_offsets,
)
from real3d.motion.track import MotionTrack

SHAPES = {
    "rest (silence)": {PRESS: 1.0},
    "open /a/": {JAW: 0.9},
    "round /u/": {JAW: 0.3, ROUND: 1.0},
    "spread /i/": {JAW: 0.3, SPREAD: 0.9},
    "f/v": {JAW: 0.15, LABIODENTAL: 1.0},
}


def shape_frames(photo: np.ndarray) -> list[np.ndarray]:
    """The source and one frame per SHAPES entry, cropped around the lower face."""
    por = analyze_portrait(photo)
    ren = MeshRenderer(por)
    rest = closed_mouth(por.canonical)
    rig = build_rig(rest)
    params = np.zeros((len(SHAPES), len(MOUTH_PARAMS)))
    for i, shape in enumerate(SHAPES.values()):
        for k, v in shape.items():
            params[i, k] = v
    expr = mouth_offsets(rest, params, rig) + (rest - por.canonical).astype(np.float32)
    tr = MotionTrack.still(len(SHAPES), 25.0)
    tr.expression[:] = expr
    lm = por.landmarks
    cx, cy = lm[[61, 291, 152, 1], 0].mean(), lm[[1, 152], 1].mean()
    half = int(0.9 * np.linalg.norm(lm[263, :2] - lm[33, :2]))
    y0, x0 = max(0, int(cy) - half), max(0, int(cx) - half)
    crop = lambda im: cv2.resize(im[y0 : int(cy) + half, x0 : int(cx) + half], (160, 160))  # noqa: E731
    return [crop(por.image)] + [crop(ren.render(tr, i)) for i in range(len(SHAPES))]


def closed(photo: np.ndarray) -> np.ndarray:
    """The photo re-rendered with its lips together (a closed-mouth source)."""
    por = analyze_portrait(photo)
    tr = MotionTrack.still(1, 25.0)
    tr.expression[:] = (closed_mouth(por.canonical) - por.canonical).astype(np.float32)
    return MeshRenderer(por).render(tr, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="*", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=Path(__file__).with_name("mouth_strip.jpg"))
    args = ap.parse_args()
    if args.photos:
        sources = [cv2.imread(str(p))[:, :, ::-1].copy() for p in args.photos]
    else:
        from skimage import data

        sources = [closed(data.astronaut()), data.astronaut()]
    rows = [np.concatenate(shape_frames(s), 1) for s in sources]
    head = np.full((22, rows[0].shape[1], 3), 255, np.uint8)
    for i, name in enumerate(["source"] + list(SHAPES)):
        cv2.putText(head, name, (i * 160 + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(args.out), np.concatenate([head] + rows, 0)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(args.out)


if __name__ == "__main__":
    main()
