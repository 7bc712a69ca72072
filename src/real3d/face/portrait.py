"""The analysed source photo: framed 512x512 image, landmarks, head frame, person mask, background."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from real3d.errors import InputError, NoFaceError
from real3d.face.canonical import HeadFrame, head_frame
from real3d.face.framing import SIZE, Framing, FramingMode, frame_face
from real3d.face.landmarks import FaceAnalyzer
from real3d.face.segmentation import PersonSegmenter, knn_fill
from real3d.io.image import load_image

log = logging.getLogger(__name__)


@dataclass
class Portrait:
    """Everything the backends need to know about the source, computed once."""

    image: np.ndarray
    """[512,512,3] uint8 RGB framed source."""
    landmarks: np.ndarray
    """[478,3] float32 landmarks in the framed image (pixels)."""
    frame: HeadFrame
    """Canonical head frame of the source."""
    canonical: np.ndarray
    """[478,3] float32 source landmarks in the canonical frame (its neutral face)."""
    person_mask: np.ndarray
    """[512,512] float32 soft person mask."""
    background: np.ndarray
    """[512,512,3] uint8 background behind the person (KNN-filled source, or the user's image)."""
    framing: Framing | None = None
    """How the photo was cropped (None when the input was used as is)."""
    n_faces: int = 1
    """How many faces the photo held."""


def analyze_portrait(
    source: str | Path | np.ndarray,
    *,
    face_index: int = 0,
    background: str | Path | np.ndarray | None = None,
    framing: FramingMode = "auto",
    analyzer: FaceAnalyzer | None = None,
    segmenter: PersonSegmenter | None = None,
) -> Portrait:
    """Load (if a path), find the face, frame it to 512x512 and analyse it."""
    name = str(source) if not isinstance(source, np.ndarray) else "the source image"
    photo = load_image(source) if not isinstance(source, np.ndarray) else _as_rgb8(source)
    own_analyzer = analyzer is None
    analyzer = analyzer or FaceAnalyzer()
    segmenter = segmenter or PersonSegmenter()
    try:
        faces = analyzer.detect(photo)
        if not faces:
            raise NoFaceError(f"no face found in {name}; use a photo with one clearly visible face")
        if face_index >= len(faces):
            raise InputError(f"--face {face_index} asked, but {name} has {len(faces)} face(s) (0 = largest)")
        if len(faces) > 1:
            log.warning(
                "%s has %d faces; using face %d (0 = largest; choose another with --face)", name, len(faces), face_index
            )
        face = faces[face_index]
        crop = frame_face(face.bbox, photo.shape[:2], mode=framing)
        image = crop.apply(photo)
        lm = _refine(analyzer, image, crop.map_points(face.landmarks).astype(np.float32))
        mask = segmenter(image)
    finally:
        if own_analyzer:
            analyzer.close()
    frame = head_frame(lm)
    bg = _background(image, mask, background)
    return Portrait(
        image=image,
        landmarks=lm,
        frame=frame,
        canonical=frame.to_canonical(lm).astype(np.float32),
        person_mask=mask,
        background=bg,
        framing=crop,
        n_faces=len(faces),
    )


def _refine(analyzer: FaceAnalyzer, image: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """Landmarks re-detected at the crop's resolution (the face nearest to the mapped one)."""
    faces = analyzer.detect(image)
    if not faces:
        return mapped
    c = mapped[:, :2].mean(0)
    best = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks[:, :2].mean(0) - c)))
    return best.landmarks


def _background(image: np.ndarray, mask: np.ndarray, background) -> np.ndarray:
    if background is None:
        return knn_fill(image, mask > 0.5, margin=10, blur=31)
    bg = load_image(background) if not isinstance(background, np.ndarray) else _as_rgb8(background)
    return cover_resize(bg, SIZE)


def cover_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Scale to cover a size x size square (keeping the aspect ratio) and centre-crop it."""
    h, w = image.shape[:2]
    s = size / min(h, w)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    r = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(r[y0 : y0 + size, x0 : x0 + size])


def _as_rgb8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0)
        a = a[..., :3].astype(np.float32) * alpha + (65535.0 if a.dtype == np.uint16 else 255.0) * (1 - alpha)
    if a.dtype == np.uint16 or (a.dtype != np.uint8 and a.max() > 255):
        a = np.asarray(a, np.float64) / 257.0
    elif a.dtype != np.uint8 and a.max() <= 1.0:
        a = np.asarray(a, np.float64) * 255.0
    return np.clip(np.asarray(a, np.float64) + (0.0 if a.dtype == np.uint8 else 0.5), 0, 255).astype(np.uint8)[..., :3]
