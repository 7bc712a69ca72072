"""Person segmentation (MediaPipe selfie segmentation, shipped in the wheel) and background filling."""

from __future__ import annotations

import cv2
import numpy as np


class PersonSegmenter:
    """Soft person mask of an RGB image (MediaPipe general selfie model, 256x256)."""

    def __init__(self) -> None:
        self._seg = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] -> float32 [H,W] probability of 'person'."""
        if self._seg is None:
            import mediapipe as mp

            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        res = self._seg.process(np.ascontiguousarray(image))
        return np.clip(res.segmentation_mask.astype(np.float32), 0.0, 1.0)

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None


def knn_fill(image: np.ndarray, fill: np.ndarray, margin: int = 10, blur: int = 0) -> np.ndarray:
    """The paper's KNN background: every pixel within `margin` px of the `fill` mask (or inside it)
    takes the colour of its nearest pixel that is farther than `margin` from it; all others keep
    their colour. `blur` > 0 smooths only the filled region (hides the streaks of nearest fill).

    image: [H,W,3] uint8; fill: [H,W] bool (True = foreground to remove).
    """
    fg = fill.astype(bool)
    if not fg.any():
        return image.copy()
    # distance of every pixel to the nearest foreground pixel
    dist = cv2.distanceTransform((~fg).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    keep = dist > margin
    if not keep.any():
        # nothing to copy from: a flat mean colour of the least-foreground border
        out = np.empty_like(image)
        out[:] = image[~fg].mean(0).astype(np.uint8) if (~fg).any() else 127
        return out
    # nearest kept pixel for every pixel (labels of zero pixels of the input)
    _, labels = cv2.distanceTransformWithLabels(
        (~keep).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE, labelType=cv2.DIST_LABEL_PIXEL
    )
    ys, xs = np.nonzero(keep)
    # label k (1-based) belongs to the k-th zero pixel in row-major scan order
    lut_y = np.concatenate([[0], ys])
    lut_x = np.concatenate([[0], xs])
    src_y = lut_y[labels]
    src_x = lut_x[labels]
    out = image[src_y, src_x]
    out[keep] = image[keep]
    if blur > 0:
        k = blur | 1
        sm = cv2.GaussianBlur(out, (k, k), 0)
        out[~keep] = sm[~keep]
    return out
