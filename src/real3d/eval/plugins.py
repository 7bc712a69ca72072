"""Plug-in metrics: networks implemented here (`real3d.eval.nets`), weights supplied by the user from local paths.

Nothing is downloaded. Each plug-in names the file(s) it expects (`EXPECTED`); a missing file raises
`DependencyError`, a file of another network (or not a weight file at all) `CheckpointError`.

  * `LpipsMetric`   LPIPS (AlexNet or VGG16 backbone + linear heads), per frame pair, lower = closer;
  * `FidMetric`     Inception-v3 pool3 features per frame; FID between two feature sets (scipy sqrtm);
  * `ArcFaceMetric` CSIM = cosine similarity of ArcFace IResNet embeddings (source vs frames);
  * `SyncMetric`    LSE-D / LSE-C with SyncNet (frames resampled to 25 fps, audio to 16 kHz).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from real3d.eval.nets import inception, iresnet, lpips, syncnet

log = logging.getLogger(__name__)


class LpipsMetric:
    """LPIPS of generated vs reference frames (frames resized to 256x256 first)."""

    EXPECTED = lpips.EXPECTED

    def __init__(
        self,
        backbone_path: str | Path,
        heads_path: str | Path,
        backbone: lpips.Backbone = "alex",
        model: lpips.LPIPS | None = None,
    ) -> None:
        self.model = model if model is not None else lpips.load_lpips(backbone_path, heads_path, backbone)

    def __call__(self, gen: list[np.ndarray], ref: list[np.ndarray], batch: int = 8) -> list[float]:
        """Per-frame LPIPS of two equal-length lists of RGB uint8 frames (same size)."""
        out: list[float] = []
        for s in range(0, min(len(gen), len(ref)), batch):
            a = torch.from_numpy(np.stack(gen[s : s + batch]))
            b = torch.from_numpy(np.stack(ref[s : s + batch]))
            out += lpips.lpips_distance(self.model, a, b).tolist()
        return out


class FidMetric:
    """Inception-v3 pool3 features of frames (299x299) and the Frechet distance of two feature sets."""

    EXPECTED = inception.EXPECTED

    def __init__(self, path: str | Path | None = None, model: inception.InceptionV3 | None = None) -> None:
        self.model = model if model is not None else inception.load_inception(path)  # type: ignore[arg-type]

    def features(self, frames: list[np.ndarray], batch: int = 16) -> np.ndarray:
        """[n,2048] features of RGB uint8 frames."""
        feats = []
        with torch.no_grad():
            for s in range(0, len(frames), batch):
                x = torch.from_numpy(np.stack(frames[s : s + batch])).float().permute(0, 3, 1, 2) / 255.0  # b c h w
                feats.append(self.model(x).numpy())
        return np.concatenate(feats) if feats else np.zeros((0, inception.FEATURE_DIM), np.float32)

    @staticmethod
    def distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
        """FID between two [n,d] feature sets."""
        return inception.frechet_distance(*inception.feature_statistics(feat_a), *inception.feature_statistics(feat_b))


class ArcFaceMetric:
    """ArcFace CSIM: mean cosine similarity of the source face's embedding to each frame's (aligned 112x112)."""

    EXPECTED = iresnet.EXPECTED

    def __init__(self, path: str | Path | None = None, model: iresnet.IResNet | None = None) -> None:
        self.model = model if model is not None else iresnet.load_iresnet(path)  # type: ignore[arg-type]

    def embeddings(self, images: list[np.ndarray], landmarks: list[np.ndarray | None]) -> np.ndarray:
        """[n,d] embeddings of the faces that have landmarks (rows in order, faceless frames skipped)."""
        size = self.model.config.input_size
        crops = [iresnet.align_face(im, lm, size) for im, lm in zip(images, landmarks) if lm is not None]
        if not crops:
            return np.zeros((0, self.model.config.embedding), np.float32)
        return iresnet.embed(self.model, np.stack(crops)).numpy()

    def __call__(
        self, source: np.ndarray, source_lm: np.ndarray, frames: list[np.ndarray], landmarks: list[np.ndarray | None]
    ) -> float:
        ref = self.embeddings([source], [source_lm])
        emb = self.embeddings(frames, landmarks)
        if len(ref) == 0 or len(emb) == 0:
            return float("nan")
        return float((emb @ ref[0]).mean())


class SyncMetric:
    """LSE-D / LSE-C of a talking-face video with its audio (SyncNet)."""

    EXPECTED = syncnet.EXPECTED

    def __init__(self, path: str | Path | None = None, model: syncnet.SyncNet | None = None) -> None:
        self.model = model if model is not None else syncnet.load_syncnet(path)  # type: ignore[arg-type]

    def __call__(
        self, frames: list[np.ndarray], landmarks: list[np.ndarray | None], fps: float, audio_16k: np.ndarray
    ) -> syncnet.SyncScore:
        idx = np.minimum(
            (np.arange(int(len(frames) / fps * syncnet.FPS)) * fps / syncnet.FPS).round().astype(int), len(frames) - 1
        )
        crops, last = [], None
        for i in idx:
            lm = landmarks[i] if landmarks[i] is not None else last
            last = lm
            if lm is None:
                crops.append(np.zeros((224, 224, 3), np.uint8))
                continue
            x0, y0, x1, y1 = syncnet.mouth_crop_box(lm)
            m = np.array([[224 / (x1 - x0), 0, -x0 * 224 / (x1 - x0)], [0, 224 / (y1 - y0), -y0 * 224 / (y1 - y0)]])
            crops.append(
                cv2.warpAffine(frames[i], m, (224, 224), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            )
        v, a = syncnet.embed_windows(self.model, np.stack(crops), audio_16k)
        return syncnet.sync_scores(v, a)
