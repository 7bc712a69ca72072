"""Training records: WebDataset-compatible tar shards (one shard per clip) plus a JSON index.

Layout of a records folder (written by `real3d prepare`, read by `real3d.train.data`):

    records/
      shards/<clip>.tar        one tar per clip; members `<clip>/<key>.<ext>`
      shards/<clip>.json       the clip's sidecar: metadata + byte offsets of every member
      failed/<clip>.json       why a clip was skipped (no face, too short, corrupt, several faces)
      index.json               all sidecars merged (rebuilt by every `prepare` run, or `build_index`)
      summary.json             counts of the last run

A tar is a plain POSIX tar whose members sharing a key form a sample (the WebDataset convention):
the clip sample `<clip>/clip.{meta.json,bg.jpg,id.npy[,hubert.npy,f0.npy]}` and one sample per frame
`<clip>/<frame:06d>.{gt.jpg,com.jpg,torso.jpg,seg.png,lms.npy,coeff.npy,cam.npy}`. So `webdataset`,
`tar`, or `iter_samples` below stream the shards from local disk or object storage; the index's
offsets give random access (a seek + read per member) for map-style loaders with a `DistributedSampler`.

Arrays are `.npy` bytes read with `np.load(allow_pickle=False)`; metadata is JSON. Nothing is pickled.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from real3d.errors import InputError

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FORMAT_VERSION = 1
CLIP_KEY = "clip"
"""Key (after `<clip>/`) of the per-clip sample."""


# ------------------------------------------------------------------------------------------- encoding
def encode_npy(array: np.ndarray) -> bytes:
    """An array as `.npy` bytes (no pickle: object arrays are refused)."""
    a = np.asarray(array)
    if a.dtype == object:
        raise TypeError("object arrays cannot be stored without pickle")
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """`.npy` bytes -> array (allow_pickle=False)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_image(image: np.ndarray, ext: str, quality: int = 95) -> bytes:
    """[H,W,3] RGB uint8 (or [H,W] uint8 for png) -> jpg/png bytes."""
    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode("." + ext, img, params)
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as {ext}")
    return buf.tobytes()


def decode_image(data: bytes, gray: bool = False) -> np.ndarray:
    """jpg/png bytes -> [H,W,3] RGB uint8 (or [H,W] uint8 with gray=True)."""
    arr = cv2.imdecode(
        np.frombuffer(data, np.uint8),
        cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR,
    )
    if arr is None:
        raise InputError("a record image cannot be decoded; the shard is corrupt: run `real3d prepare` again")
    return arr if gray else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------------------- writing
@dataclass
class ClipEntry:
    """One clip of the index."""

    name: str
    """Clip name (also the tar's stem and the key prefix of its members)."""
    shard: str
    """Tar path relative to the records root."""
    num_frames: int
    """Frames at 25 fps."""
    meta: dict[str, Any]
    """The clip's metadata (source video, fps, size, framing matrix, landmark RMSE, ...)."""
    members: dict[str, list[int]] = field(default_factory=dict)
    """`<key>.<ext>` -> [byte offset of the data in the tar, size]."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shard": self.shard,
            "num_frames": self.num_frames,
            "meta": self.meta,
            "members": self.members,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClipEntry:
        return cls(
            d["name"],
            d["shard"],
            int(d["num_frames"]),
            dict(d["meta"]),
            {k: list(v) for k, v in d["members"].items()},
        )


def frame_key(frame: int) -> str:
    return f"{frame:06d}"


class ClipShardWriter:
    """Writes one clip's tar atomically (a temp file renamed at `close`) and its sidecar JSON."""

    def __init__(self, root: str | Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self.path = self.root / "shards" / f"{name}.tar"
        self._tmp = self.path.with_name(f".{name}.{os.getpid()}.tmp")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self.members: dict[str, list[int]] = {}
        self._mtime = time.time()

    def add(self, key: str, ext: str, data: bytes) -> None:
        """Add member `<clip>/<key>.<ext>`."""
        info = tarfile.TarInfo(f"{self.name}/{key}.{ext}")
        info.size = len(data)
        info.mtime = self._mtime
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        self.members[f"{key}.{ext}"] = [
            self._tar.offset - padded,
            len(data),
        ]  # data sits right before `offset`

    def close(self, num_frames: int, meta: dict[str, Any]) -> ClipEntry:
        """Finish the tar, then write the sidecar (its presence marks the clip done)."""
        self._tar.close()
        os.replace(self._tmp, self.path)
        entry = ClipEntry(self.name, f"shards/{self.path.name}", num_frames, meta, self.members)
        _write_json(self.path.with_suffix(".json"), entry.to_json())
        return entry

    def abort(self) -> None:
        self._tar.close()
        self._tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=None, separators=(",", ":")))
    os.replace(tmp, path)


def write_failure(root: str | Path, name: str, source: str, reason: str) -> None:
    """Record why a clip was skipped (`failed/<clip>.json`)."""
    d = Path(root) / "failed"
    d.mkdir(parents=True, exist_ok=True)
    _write_json(d / f"{name}.json", {"name": name, "source": source, "reason": reason})


def clip_done(root: str | Path, name: str) -> bool:
    """Whether the clip's tar and sidecar exist (resume skips it)."""
    base = Path(root) / "shards" / name
    return base.with_suffix(".json").is_file() and base.with_suffix(".tar").is_file()


def build_index(root: str | Path) -> dict[str, Any]:
    """Merge every clip sidecar under `root/shards` into `root/index.json` (atomic) and return it."""
    root = Path(root)
    clips = []
    for p in sorted((root / "shards").glob("*.json")):
        try:
            clips.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            log.warning("skipping unreadable sidecar %s: %s", p, e)
    failed = []
    for p in sorted((root / "failed").glob("*.json")) if (root / "failed").is_dir() else []:
        try:
            failed.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    index = {
        "format": "real3d-records",
        "version": FORMAT_VERSION,
        "clips": clips,
        "failed": failed,
    }
    _write_json(root / INDEX_NAME, index)
    return index


# ------------------------------------------------------------------------------------------- reading
class RecordIndex:
    """The clips of a records folder, with random access to their members."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / INDEX_NAME
        if not path.is_file():
            if (self.root / "shards").is_dir():
                data = build_index(self.root)
            else:
                raise InputError(f"no training records at {self.root} (no {INDEX_NAME}); run `real3d prepare` first")
        else:
            try:
                data = json.loads(path.read_text())
            except ValueError as e:
                raise InputError(
                    f"{path} is not valid JSON ({e}); rebuild it with `real3d prepare --index-only`"
                ) from e
        if data.get("format") != "real3d-records":
            raise InputError(f"{path} is not a real3d records index")
        self.clips = [ClipEntry.from_json(c) for c in data["clips"]]
        self.failed: list[dict[str, Any]] = data.get("failed", [])
        self._by_name = {c.name: c for c in self.clips}
        self._files: dict[str, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, name: str) -> ClipEntry:
        return self._by_name[name]

    def read(self, clip: ClipEntry, key: str, ext: str) -> bytes:
        """Bytes of member `<clip>/<key>.<ext>` (one seek and read; file handles are kept per process)."""
        if os.getpid() != self._pid:  # forked into a loader worker: do not share file offsets
            self._files, self._pid = {}, os.getpid()
        try:
            off, size = clip.members[f"{key}.{ext}"]
        except KeyError as e:
            raise InputError(f"clip {clip.name} has no member {key}.{ext}; its records are incomplete") from e
        f = self._files.get(clip.shard)
        if f is None:
            f = self._files[clip.shard] = open(self.root / clip.shard, "rb")  # noqa: SIM115 (kept open)
        f.seek(off)
        data = f.read(size)
        if len(data) != size:
            raise InputError(f"{self.root / clip.shard} is truncated; run `real3d prepare` again for {clip.name}")
        return data

    def array(self, clip: ClipEntry, key: str, ext: str) -> np.ndarray:
        return decode_npy(self.read(clip, key, ext + ".npy" if not ext.endswith(".npy") else ext))

    def image(self, clip: ClipEntry, key: str, ext: str, gray: bool = False) -> np.ndarray:
        return decode_image(self.read(clip, key, ext), gray=gray)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:  # loader workers reopen files themselves
        d = dict(self.__dict__)
        d["_files"] = {}
        return d


def iter_samples(tar_path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream a shard as WebDataset does: consecutive members sharing a key form one sample
    `{"__key__": "<clip>/<key>", "<ext>": bytes, ...}` (ext = everything after the key's first dot)."""
    current: dict[str, Any] | None = None
    with tarfile.open(tar_path, "r|") as tar:
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)
            stem, ext = base[-1].split(".", 1)
            key = (base[0] + "/" if len(base) > 1 else "") + stem
            f = tar.extractfile(m)
            data = f.read() if f is not None else b""
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[ext] = data
    if current is not None:
        yield current
