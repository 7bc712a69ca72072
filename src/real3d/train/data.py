"""Loaders of the image stages: (source frame, target frame) pairs of one clip from the records.

A map-style dataset over source frames (so a `DistributedSampler` gives each rank different samples);
the target frame of item i is drawn by the official rule (uniform, redrawn until |tgt - src| >=
min(50, max((N-1-tgt)//2, tgt//2))) from an RNG seeded by (seed, epoch, i): the pairs do not depend on
the global RNG, the number of workers or the rank, so a resumed run sees exactly the batches it would
have seen. Images are resized from the record size to the model's input size here.

Held-out data: clips listed in `val_clips` and the last `holdout_tail` fraction of every other clip's
frames are never used for training; `ValidationPairs` pairs each clip's first frame (the source) with
evenly spaced held-out frames.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from real3d.errors import InputError
from real3d.face import topology as topo
from real3d.face.parsing import HEAD_CLASSES, TORSO_CLASSES, head_image
from real3d.train.records import CLIP_KEY, ClipEntry, RecordIndex, frame_key

log = logging.getLogger(__name__)

LIP_POINTS = tuple(sorted(set(topo.OUTER_LIP_UPPER + topo.OUTER_LIP_LOWER)))


@dataclass
class DataConfig:
    """Where the records are and how pairs are drawn."""

    records: str = "records"
    """Folder written by `real3d prepare`."""
    val_clips: tuple[str, ...] = ()
    """Clips held out entirely for validation (cross-identity)."""
    holdout_tail: float = 0.2
    """Fraction of the frames at the end of every training clip held out for validation (same identity)."""
    min_gap: int = 50
    """Official minimum |tgt - src| (shrunk near the clip ends by the official rule)."""
    val_pairs_per_clip: int = 4
    """Validation targets per clip (evenly spaced over its held-out frames)."""
    strip_clips: tuple[str, ...] = ()
    """Clips whose validation pairs the sample strips show (empty = pairs spread over every clip), e.g. the
    clips you may publish."""
    num_workers: int = 0
    """DataLoader worker processes."""
    seed: int = 0
    """Seed of the pair draws and of the sampler's shuffle."""
    clips: tuple[str, ...] = field(default_factory=tuple)
    """Only these clips (empty = all)."""


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """[H,W,3] uint8 -> [3,H,W] float32 in [-1,1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0


def lip_box(landmarks: np.ndarray, size: int, scale: float) -> np.ndarray:
    """Official `get_lip_rect`: a square around the outer lips of half-size 1.2 * max(half-w, half-h), kept
    inside the image. landmarks: [478,3] in pixels of an image of side size/scale. Returns [4] x0,y0,x1,y1
    in pixels of the `size` image (our landmarks: MediaPipe's lips instead of the 3DMM's lm68 48-59)."""
    pts = landmarks[list(LIP_POINTS), :2] * scale
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = 1.2 * max((x1 - x0) / 2, (y1 - y0) / 2, 2.0)
    half = min(half, size / 2)
    cx, cy = np.clip(cx, half, size - half), np.clip(cy, half, size - half)
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)


class FrameReader:
    """Decodes one frame's members at `size` (shared by the pair datasets)."""

    def __init__(self, index: RecordIndex, size: int) -> None:
        self.index, self.size = index, size

    def _img(self, clip: ClipEntry, key: str, ext: str) -> np.ndarray:
        img = self.index.image(clip, key, ext)
        if img.shape[0] != self.size:
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return img

    def clip_items(self, clip: ClipEntry) -> dict[str, torch.Tensor]:
        return {
            "bg": _to_tensor(self._img(clip, CLIP_KEY, "bg.jpg")),
            "id": torch.from_numpy(self.index.array(clip, CLIP_KEY, "id")).float(),
        }

    def frame(self, clip: ClipEntry, i: int, prefix: str) -> dict[str, torch.Tensor]:
        key = frame_key(i)
        rec_size = int(clip.meta["size"])
        seg = self.index.image(clip, key, "seg.png", gray=True)
        gt = self._img(clip, key, "gt.jpg")
        if rec_size != self.size:
            seg = cv2.resize(seg, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        head = head_image(gt, seg)  # at the model size: exactly -1 outside the (resized) head classes
        coeff = torch.from_numpy(self.index.array(clip, key, "coeff")).float()
        lms = self.index.array(clip, key, "lms")
        out = {
            "head": _to_tensor(head),
            "com": _to_tensor(self._img(clip, key, "com.jpg")),
            "seg": torch.from_numpy(seg.astype(np.int64)),
            "head_mask": torch.from_numpy(np.isin(seg, HEAD_CLASSES)[None].astype(np.float32)),
            "torso_mask": torch.from_numpy(np.isin(seg, TORSO_CLASSES)[None].astype(np.float32)),
            "exp": coeff[:64],
            "euler": coeff[64:67],
            "trans": coeff[67:70],
            "cam": torch.from_numpy(self.index.array(clip, key, "cam")).float(),
            "lip_box": torch.from_numpy(lip_box(lms, self.size, self.size / rec_size)),
        }
        if prefix == "src":
            out["torso"] = _to_tensor(self._img(clip, key, "torso.jpg"))
        return {f"{prefix}_{k}": v for k, v in out.items()}


def _split(index: RecordIndex, cfg: DataConfig) -> tuple[list[tuple[ClipEntry, int]], dict[str, list[int]]]:
    """(train frames [(clip, n_train)], held-out frame ids per clip)."""
    train, held = [], {}
    names = set(cfg.clips) if cfg.clips else None
    for c in index.clips:
        if names is not None and c.name not in names:
            continue
        if c.name in cfg.val_clips:
            held[c.name] = list(range(c.num_frames))
            continue
        n_train = max(2, int(round(c.num_frames * (1 - cfg.holdout_tail))))
        train.append((c, n_train))
        if n_train < c.num_frames:
            held[c.name] = list(range(n_train, c.num_frames))
    return train, held


def draw_target(rng: random.Random, n: int, src: int, min_gap: int) -> int:
    """Official target rule: uniform, redrawn until |tgt - src| >= min(min_gap, max((n-1-tgt)//2, tgt//2))."""
    if n <= 1:
        return src
    for _ in range(100):
        tgt = rng.randrange(n)
        if abs(tgt - src) >= min(min_gap, max((n - 1 - tgt) // 2, tgt // 2)):
            return tgt
    return tgt


class PairDataset(Dataset):
    """Training pairs: item i = source frame i of the concatenated training frames, target drawn per epoch."""

    def __init__(self, index: RecordIndex, cfg: DataConfig, size: int) -> None:
        self.index, self.config = index, cfg
        self.reader = FrameReader(index, size)
        self.train, _ = _split(index, cfg)
        if not self.train:
            raise InputError(
                f"no training clips in {index.root} (all held out or filtered); add clips or change "
                "data.val_clips / data.clips"
            )
        self.offsets = np.cumsum([0] + [n for _, n in self.train])
        self.epoch = 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def locate(self, i: int) -> tuple[ClipEntry, int, int]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        clip, n = self.train[k]
        return clip, n, i - int(self.offsets[k])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        clip, n, src = self.locate(i)
        rng = random.Random(hash((self.config.seed, self.epoch, i)) & 0xFFFFFFFF)
        tgt = draw_target(rng, n, src, self.config.min_gap)
        item = self.reader.clip_items(clip)
        item.update(self.reader.frame(clip, src, "src"))
        item.update(self.reader.frame(clip, tgt, "tgt"))
        item["index"] = torch.tensor([i, src, tgt])
        return item


class ValidationPairs(Dataset):
    """Held-out pairs: (first frame of the clip, a held-out frame), a fixed list. Targets keep the training
    pairs' gap from the source (>= min(min_gap, (N-1)//2) frames): a clip held out entirely never pairs its
    first frame with itself (a pair that scores the frozen-source baseline 100 dB and tests nothing)."""

    def __init__(self, index: RecordIndex, cfg: DataConfig, size: int) -> None:
        self.reader = FrameReader(index, size)
        _, held = _split(index, cfg)
        missing = sorted(set(cfg.strip_clips) - set(held))
        if missing:
            raise InputError(
                f"data.strip_clips: {', '.join(missing)} not among the clips with held-out frames in {index.root} "
                f"({', '.join(sorted(held)) or 'none'}); name clips of the records"
            )
        self.unseen = set(cfg.val_clips)
        self.pairs = []
        for name, frames in held.items():
            gap = max(1, min(cfg.min_gap, (index.clip(name).num_frames - 1) // 2))
            frames = [f for f in frames if f >= gap]
            k = min(cfg.val_pairs_per_clip, len(frames))
            picks = [frames[int(j)] for j in np.linspace(0, len(frames) - 1, k).round()] if k else []
            self.pairs += [(index.clip(name), f) for f in picks]

    def __len__(self) -> int:
        return len(self.pairs)

    def clip_name(self, i: int) -> str:
        """Name of the clip of pair i (`item["index"][0]`)."""
        return self.pairs[i][0].name

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        clip, tgt = self.pairs[i]
        item = self.reader.clip_items(clip)
        item.update(self.reader.frame(clip, 0, "src"))
        item.update(self.reader.frame(clip, tgt, "tgt"))
        item["index"] = torch.tensor([i, 0, tgt])
        item["unseen"] = torch.tensor(clip.name in self.unseen)
        return item


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` that can start mid-epoch (`start_batch` batches of this rank already done)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.batch_size = batch_size
        self.start_batch = 0

    def __iter__(self):
        idx = list(super().__iter__())
        return iter(idx[self.start_batch * self.batch_size :])

    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size
