"""Six-class face/body parsing and the official torso inpainting, for the neural backend.

The official code segments the source with MediaPipe's `selfie_multiclass_256x256.tflite` (classes:
0 background, 1 hair, 2 body-skin, 3 face-skin, 4 clothes, 5 others). That model is a download, not
shipped in any package, so by default the same six classes are approximated from what ships:

- person = selfie segmentation (general model) > 0.5;
- face-skin = inside the face-oval polygon of the 478 landmarks, plus skin-coloured person pixels of
  the head region beside it (ears);
- hair = the rest of the head region (person pixels above the jaw line, within a head ellipse);
- body-skin vs clothes below the jaw: skin-colour likelihood against the face's own skin (chroma
  distance in Lab), so a neck is separated from a collar whatever the person's skin tone;
- others: never produced by the approximation.
With `segmenter_model=` (the official .tflite, used through the MediaPipe Tasks API) the real
classes are used instead.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from real3d.errors import DependencyError
from real3d.face import topology as topo

BACKGROUND, HAIR, BODY_SKIN, FACE_SKIN, CLOTHES, OTHERS = range(6)
HEAD_CLASSES = (HAIR, FACE_SKIN, OTHERS)
TORSO_CLASSES = (BODY_SKIN, CLOTHES)


def approximate_parsing(image: np.ndarray, landmarks: np.ndarray, person: np.ndarray) -> np.ndarray:
    """[H,W] uint8 class map from an RGB image, its 478 landmarks (pixels) and a soft person mask."""
    h, w = image.shape[:2]
    person_b = person > 0.5
    labels = np.zeros((h, w), np.uint8)
    oval = np.round(landmarks[list(topo.FACE_OVAL), :2]).astype(np.int32)
    face = np.zeros((h, w), np.uint8)
    cv2.fillPoly(face, [oval], 1)
    face_b = face.astype(bool)

    # skin model from the face's own pixels (eyes and mouth excluded)
    holes = np.zeros((h, w), np.uint8)
    for loop in (topo.RIGHT_EYE_LOOP, topo.LEFT_EYE_LOOP, topo.INNER_LIP_LOOP):
        cv2.fillPoly(holes, [np.round(landmarks[list(loop), :2]).astype(np.int32)], 1)
    holes = cv2.dilate(holes, np.ones((9, 9), np.uint8)).astype(bool)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    skin_px = lab[face_b & ~holes & person_b] if (face_b & ~holes & person_b).any() else lab[face_b]
    ab_mean = np.median(skin_px[:, 1:], axis=0)
    ab_spread = np.maximum(np.percentile(np.abs(skin_px[:, 1:] - ab_mean), 90, axis=0), 3.0)
    l_med = np.median(skin_px[:, 0])
    da, db = ((lab[..., i] - ab_mean[i - 1]) / ab_spread[i - 1] for i in (1, 2))
    chroma_d = np.sqrt(da * da + db * db)
    skin_like = (chroma_d < 1.6) & (np.abs(lab[..., 0] - l_med) < 70)

    # geometry: jaw line and a head ellipse from the landmarks
    jaw_y = np.interp(np.arange(w), *_lower_contour(landmarks))
    ys = np.arange(h)[:, None]
    below_jaw = ys > jaw_y[None, :] + 2
    c = landmarks[list(topo.FACE_OVAL), :2].mean(0)
    fw = np.ptp(landmarks[list(topo.FACE_OVAL), 0])
    fh = np.ptp(landmarks[list(topo.FACE_OVAL), 1])
    ex = ((np.arange(w) - c[0]) / (0.95 * fw)) ** 2
    ey = ((ys - (c[1] - 0.12 * fh)) / (0.85 * fh)) ** 2
    head_ell = ex[None, :] + ey < 1.0

    head_region = person_b & ~below_jaw & (head_ell | face_b)
    labels[person_b] = CLOTHES
    labels[person_b & below_jaw & skin_like] = BODY_SKIN
    labels[head_region] = HAIR
    labels[head_region & skin_like & ~face_b] = FACE_SKIN  # ears
    labels[face_b] = FACE_SKIN
    # person pixels above the jaw but outside the head ellipse (long hair, raised hands...) count as hair
    labels[person_b & ~below_jaw & ~head_region] = HAIR
    return labels


def _lower_contour(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x-sorted points of the face oval below its widest row (the jaw line), extended flat sideways."""
    oval = landmarks[list(topo.FACE_OVAL), :2]
    mid_y = oval[:, 1].min() + 0.55 * np.ptp(oval[:, 1])
    low = oval[oval[:, 1] >= mid_y]
    order = np.argsort(low[:, 0])
    return low[order, 0], low[order, 1]


def one_hot(labels: np.ndarray) -> np.ndarray:
    """[H,W] class map -> [6,H,W] float32 one-hot (the official `segmap`)."""
    return (labels[None] == np.arange(6)[:, None, None]).astype(np.float32)


class MulticlassSegmenter:
    """The official segmenter (`selfie_multiclass_256x256.tflite`) through the MediaPipe Tasks API."""

    def __init__(self, model_path: str | Path) -> None:
        p = Path(model_path)
        if not p.is_file():
            raise DependencyError(
                f"segmenter model not found: {p}; it is MediaPipe's selfie_multiclass_256x256.tflite "
                "(linked from the Real3D-Portrait README and MediaPipe's image-segmenter models page)"
            )
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import (
            ImageSegmenter,
            ImageSegmenterOptions,
            RunningMode,
        )

        opts = ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(p)),
            running_mode=RunningMode.IMAGE,
            output_category_mask=True,
        )
        self._seg = ImageSegmenter.create_from_options(opts)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import mediapipe as mp

        res = self._seg.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        return res.category_mask.numpy_view().astype(np.uint8).copy()


def head_image(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`ref_head_img`: hair/face-skin/others kept, everything else black (-1 after normalisation)."""
    keep = np.isin(labels, HEAD_CLASSES)
    return np.where(keep[..., None], image, 0).astype(np.uint8)


def _extend_up(
    out: np.ndarray,
    colours: np.ndarray,
    y0: np.ndarray,
    cols: np.ndarray,
    steps: range,
    keep: np.ndarray | None,
    filled: np.ndarray,
    inpainted: np.ndarray,
) -> None:
    """out[y0 - k, col] = colour x 0.98^k for k in `steps` (rows >= 0), all columns at once; where `keep` is given,
    its pixels are overwritten only for k <= 4. Marks the written pixels in `filled` and `inpainted`."""
    for k in steps:
        y = y0 - k
        ok = y >= 0
        if keep is not None and k > 4:
            ok &= ~keep[np.maximum(y, 0), cols]
        out[y[ok], cols[ok]] = colours[ok] * 0.98**k
        filled[y[ok], cols[ok]] = inpainted[y[ok], cols[ok]] = True


def inpaint_torso(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The official `inpaint_torso_job`: the torso (neck + clothes) with the part hidden behind the
    head extended upward, so the torso branch sees a plausible neck when the head turns.

    - head pixels are removed;
    - every column whose top torso pixel sits right under the head is extended 9 px upward, darkening 0.98^k;
    - the neck (body-skin, dilated vertically x3) is pushed down 4 px then extended 53 px upward, darkening 0.98^k,
      and the inpainted area is blurred (5x5);
    - the result keeps neck, torso and inpainted pixels; black elsewhere.
    """
    h, w = labels.shape
    img = image.astype(np.float32)
    head = np.isin(labels, HEAD_CLASSES)
    torso = np.isin(labels, TORSO_CLASSES)
    out = img * torso[..., None]  # the torso's colours, 0 elsewhere
    filled = torso.copy()
    inpainted = np.zeros((h, w), bool)

    # columns: extend the topmost torso pixel upward where the pixel above it is head
    has = torso.any(0)
    top = np.where(has, torso.argmax(0), h)
    cols = np.flatnonzero(has & (top > 0))
    cols = cols[head[top[cols] - 1, cols]]
    _extend_up(out, img[top[cols], cols], top[cols], cols, range(1, 10), None, filled, inpainted)

    # neck: dilate vertically, push down 4 px, extend 53 px upward
    neck = labels == BODY_SKIN
    if neck.any():
        neck_d = cv2.dilate(neck.astype(np.uint8), np.ones((3, 1), np.uint8), iterations=1).astype(bool) & ~head | neck
        ncols = np.flatnonzero(neck_d.any(0))
        y0 = np.minimum(neck_d.argmax(0)[ncols] + 4, h - 1)
        _extend_up(out, img[y0, ncols], y0, ncols, range(0, 54), torso, filled, inpainted)
        if inpainted.any():
            np.copyto(out, cv2.GaussianBlur(out, (5, 5), 0), where=inpainted[..., None])
    out *= filled[..., None]  # black where nothing was kept or painted
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
