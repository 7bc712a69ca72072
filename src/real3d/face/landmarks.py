"""MediaPipe face landmarks (478 points with irises), for photos and for video tracks.

Photos: MediaPipe's full-range face detector finds every face (also small ones in large photos),
then the face mesh runs on a square crop around each, so landmark precision does not depend on
how much of the photo the face fills. Videos: the face mesh's own tracking mode (temporally
stable), re-detected when tracking is lost.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class Face:
    """One detected face."""

    landmarks: np.ndarray
    """[478,3] float32 pixels: x right, y down, z (depth, image-x scale; smaller = nearer)."""

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the landmarks."""
        xy = self.landmarks[:, :2]
        return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return (x1 - x0) * (y1 - y0)


def _mesh_to_px(result, w: int, h: int) -> list[np.ndarray]:
    """[478,3] float32 pixels per face of a MediaPipe face-mesh result (scaled in float64, as Python floats are)."""
    scale = np.array([w, h, w], dtype=np.float64)
    return [
        (np.array([(p.x, p.y, p.z) for p in f.landmark], dtype=np.float64) * scale).astype(np.float32)
        for f in result.multi_face_landmarks or []
    ]


class FaceAnalyzer:
    """Landmark detector for photos (`detect`) and for video frames (`track`). Not thread-safe."""

    def __init__(self, max_faces: int = 8) -> None:
        self.max_faces = max_faces
        self._detector = None
        self._mesh_static = None
        self._mesh_video = None

    # -- lazily created MediaPipe graphs (their construction loads the shipped models)
    def _det(self):
        if self._detector is None:
            import mediapipe as mp

            self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        return self._detector

    def _static(self):
        if self._mesh_static is None:
            import mediapipe as mp

            self._mesh_static = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, refine_landmarks=True, max_num_faces=1, min_detection_confidence=0.3
            )
        return self._mesh_static

    def _video(self):
        if self._mesh_video is None:
            import mediapipe as mp

            self._mesh_video = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False,
                refine_landmarks=True,
                max_num_faces=1,
                min_detection_confidence=0.4,
                min_tracking_confidence=0.4,
            )
        return self._mesh_video

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 photo, largest first."""
        h, w = image.shape[:2]
        boxes = self._detect_boxes(image)
        faces: list[Face] = []
        for x0, y0, x1, y1 in boxes:
            lm = self._mesh_in_box(image, (x0, y0, x1, y1))
            if lm is not None:
                faces.append(Face(lm))
        if not faces:  # the detector can miss very large / cropped faces: ask the mesh on the whole frame
            scale = min(1.0, 1024 / max(h, w))
            small = (
                cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
                if scale < 1
                else image
            )
            for lm in _mesh_to_px(self._static().process(small), small.shape[1], small.shape[0]):
                lm = lm / np.float32(scale)
                faces.append(Face(lm.astype(np.float32)))
        faces = _dedupe(faces)
        faces.sort(key=lambda f: -f.area)
        return faces[: self.max_faces]

    def _detect_boxes(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Face boxes from the full-range detector run on the whole photo and on overlapping square
        windows (the detector works on a square input: a wide photo squeezes its faces)."""
        h, w = image.shape[:2]
        side = min(h, w)
        windows = [(0, 0, w, h)]
        if max(h, w) > 1.2 * side:
            stride = side // 2
            xs = list(range(0, w - side + 1, stride)) or [0]
            ys = list(range(0, h - side + 1, stride)) or [0]
            if xs[-1] != w - side:
                xs.append(w - side)
            if ys[-1] != h - side:
                ys.append(h - side)
            windows += [(x, y, x + side, y + side) for y in ys for x in xs]
        boxes = []
        for x0, y0, x1, y1 in windows:
            crop = image[y0:y1, x0:x1]
            ch, cw = crop.shape[:2]
            scale = min(1.0, 1280 / max(ch, cw))
            if scale < 1:
                crop = cv2.resize(crop, (round(cw * scale), round(ch * scale)), interpolation=cv2.INTER_AREA)
            res = self._det().process(np.ascontiguousarray(crop))
            for d in res.detections or []:
                b = d.location_data.relative_bounding_box
                boxes.append(
                    (x0 + b.xmin * cw, y0 + b.ymin * ch, x0 + (b.xmin + b.width) * cw, y0 + (b.ymin + b.height) * ch)
                )
        return boxes

    def _mesh_in_box(self, image: np.ndarray, box) -> np.ndarray | None:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = 2.0 * max(x1 - x0, y1 - y0)
        size = 384
        s = size / side
        # affine that maps the square crop around the face to a size x size image (border: replicate)
        m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float64)
        crop = cv2.warpAffine(
            image, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        found = _mesh_to_px(self._static().process(crop), size, size)
        if not found:
            return None
        lm = found[0].astype(np.float64)
        lm[:, 0] = (lm[:, 0] - m[0, 2]) / s
        lm[:, 1] = (lm[:, 1] - m[1, 2]) / s
        lm[:, 2] = lm[:, 2] / s
        if not (0 <= lm[:, 0].mean() < w and 0 <= lm[:, 1].mean() < h):
            return None
        return lm.astype(np.float32)

    def track(self, frame: np.ndarray) -> np.ndarray | None:
        """[478,3] landmarks of the main face in a video frame (tracking mode), or None."""
        h, w = frame.shape[:2]
        found = _mesh_to_px(self._video().process(np.ascontiguousarray(frame)), w, h)
        return found[0] if found else None

    def close(self) -> None:
        for g in (self._detector, self._mesh_static, self._mesh_video):
            if g is not None:
                g.close()
        self._detector = self._mesh_static = self._mesh_video = None

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dedupe(faces: list[Face]) -> list[Face]:
    """Drop faces whose landmark centres coincide (one face seen by two detections)."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -f.area):
        c = f.landmarks[:, :2].mean(0)
        size = np.sqrt(f.area)
        if all(np.linalg.norm(c - k.landmarks[:, :2].mean(0)) > 0.3 * size for k in kept):
            kept.append(f)
    return kept
