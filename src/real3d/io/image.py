"""Reading portrait photos: any mode (RGBA, grayscale, palette, 16-bit, CMYK), EXIF orientation, huge sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from real3d.errors import InputError

MAX_SIDE = 2048
"""Photos are downscaled so their longer side is at most this many pixels (plenty for a 512 crop)."""
MAX_PIXELS = 400_000_000
"""Refuse decompression bombs above this many pixels."""


def load_image(path: str | Path, max_side: int = MAX_SIDE) -> np.ndarray:
    """Read a photo as RGB uint8 [H,W,3], upright (EXIF applied), alpha composited onto white.

    Raises InputError for a missing, unreadable or corrupt file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"image not found: {p}; check the path")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an image; give a photo file (jpg, png, webp, ...)")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(p) as im:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size directly
            im = ImageOps.exif_transpose(im)
            arr = _to_rgb8(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read {p} as an image ({e}); use a JPEG/PNG/WebP photo") from e
    h, w = arr.shape[:2]
    if min(h, w) < 16:
        raise InputError(f"{p} is only {w}x{h} pixels; use a photo of at least 256x256")
    if max(h, w) > max_side:
        import cv2

        f = max_side / max(h, w)
        arr = cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def _to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
        return np.repeat((a * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)
