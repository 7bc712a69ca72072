"""`real3d prepare`: talking-face videos -> training records (`real3d.train.records`).

Per clip (the official pipeline of `data_gen/`, see shared/docs/official-training.md §1, with our framing):

1. decode and resample to 25 fps (nearest timestamp), at most `max_frames`;
2. find the face on a few frames spread over the clip: none -> skipped ("no face"); a second face at
   least `several_faces_ratio` as large -> skipped ("several faces");
3. one fixed square crop per clip from the median face box (`real3d.face.framing.frame_face`, the same
   framing inference uses; its matrix is recorded in the clip's metadata), every frame warped to
   `size` x `size`;
4. per frame: 478 MediaPipe landmarks (video tracking), person mask, 6-class parsing (the shipped
   approximation, or the official multiclass .tflite with `segmenter_model`), inpainted torso;
5. the clip's static background by the official multi-frame rule (`static_background`), and the
   composited targets (frame with its background class replaced by that background);
6. a 3DMM fit of all frames (BFM from a local folder): one identity per clip, exp/euler/trans per frame,
   and the EG3D camera of each frame;
7. optionally HuBERT features (a local snapshot) and f0 of the clip's audio (for the A2M stage).

Parallel (`workers` processes), splittable across machines (`shard=(i, n)`: clip k is prepared by job
k % n == i, no coordinator), resumable (a clip whose tar and sidecar exist is skipped), and a bad clip
(no face, too short, corrupt, several faces, face lost) is logged with its reason and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from real3d.audio.pitch import official_f0
from real3d.errors import InputError, NoFaceError, Real3DError
from real3d.face.bfm import BFMFiles, ParametricFace
from real3d.face.fitting import fit_video
from real3d.face.framing import frame_face
from real3d.face.landmarks import FaceAnalyzer
from real3d.face.parsing import MulticlassSegmenter, approximate_parsing, inpaint_torso
from real3d.face.segmentation import PersonSegmenter
from real3d.geometry import camera_from_pose
from real3d.io.audio import has_audio, load_audio
from real3d.io.video import VIDEO_SUFFIXES, count_frames, iter_frames
from real3d.models.hubert import hubert_features, load_hubert
from real3d.train import records as rec

log = logging.getLogger(__name__)


@dataclass
class PrepareConfig:
    """Options of `real3d prepare`."""

    bfm: Path | None = None
    """BFM 2009 folder (the release's deep_3drecon/BFM); required for the 3DMM fits."""
    size: int = 512
    """Side of the framed frames in pixels (512 = the official and inference size)."""
    fps: float = 25.0
    """Frame rate the clips are resampled to."""
    min_frames: int = 32
    """Clips shorter than this (after resampling) are skipped."""
    max_frames: int | None = None
    """Keep at most this many frames per clip (None = all)."""
    framing: Literal["auto", "crop", "full"] = "crop"
    """Framing of `real3d.face.framing` (head-and-shoulders crop by default, as inference frames photos)."""
    max_lost: float = 0.1
    """Largest fraction of frames without landmarks (filled from the nearest tracked frame); more -> skipped."""
    several_faces_ratio: float = 0.35
    """A second face whose box area is at least this fraction of the largest one's -> skipped."""
    segmenter_model: Path | None = None
    """MediaPipe's selfie_multiclass_256x256.tflite for the 6-class parsing; None = the shipped approximation."""
    hubert: Path | None = None
    """Local facebook/hubert-large-ls960-ft snapshot: store HuBERT features of the audio (A2M stage)."""
    f0: bool = False
    """Store the f0 track of the audio (50 Hz)."""
    jpeg_quality: int = 95
    """JPEG quality of the stored images."""
    workers: int = 1
    """Processes preparing clips in parallel."""
    shard: tuple[int, int] = (0, 1)
    """(i, n): prepare only the clips k with k % n == i (one job of a Slurm array, etc.)."""
    retry_failed: bool = False
    """Retry clips that a previous run skipped (otherwise they stay skipped)."""


@dataclass
class ClipResult:
    """What happened to one clip."""

    name: str
    source: str
    status: Literal["done", "skipped", "resumed", "failed-before"]
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0


@dataclass
class PrepareSummary:
    """Counts of one `prepare` run (also written to summary.json)."""

    clips: list[ClipResult] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(c.status for c in self.clips))

    def to_json(self) -> dict[str, Any]:
        frames = sum(c.frames for c in self.clips if c.status == "done")
        return {
            "counts": self.counts(),
            "frames_written": frames,
            "seconds": round(self.seconds, 2),
            "clips": [asdict(c) for c in self.clips],
        }


# ------------------------------------------------------------------------------------------ inputs
def list_videos(inputs: list[str | Path]) -> list[Path]:
    """Videos from folders (recursive), video files, `.txt` lists (one path per line, relative to the list)
    or `.jsonl` manifests (`{"path": ...}` per line)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file())
        elif p.suffix.lower() == ".txt" and p.is_file():
            out += [
                (p.parent / line.strip())
                for line in p.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            ]
        elif p.suffix.lower() == ".jsonl" and p.is_file():
            for n, line in enumerate(p.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        out.append(p.parent / json.loads(line)["path"])
                    except (ValueError, KeyError, TypeError) as e:
                        raise InputError(f'{p}:{n} is not a JSON object with a "path": {e}') from e
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p} is neither a video, a folder, a .txt list nor a .jsonl manifest")
    return out


def clip_names(videos: list[Path]) -> list[str]:
    """A file-system- and key-safe name per video: its stem, plus a hash of its path when stems collide."""
    stems = [re.sub(r"[^A-Za-z0-9_-]+", "_", v.stem).strip("_") or "clip" for v in videos]
    counts = Counter(stems)
    return [
        s if counts[s] == 1 else f"{s}_{hashlib.sha1(str(v.resolve()).encode()).hexdigest()[:8]}"
        for s, v in zip(stems, videos)
    ]


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        raise InputError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


# ------------------------------------------------------------------------------------------ pieces
def static_background(frames: list[np.ndarray], labels: list[np.ndarray], margin: float = 10.0) -> np.ndarray:
    """The official video background (`extract_segment_imgs.py`): over subsampled frames, each pixel
    takes its colour from the frame where it is farthest from the person (class != 0), if that
    distance exceeds `margin` px; the remaining pixels copy their nearest such pixel.

    frames: the subsampled [H,W,3] uint8 frames; labels: their [H,W] class maps. Returns [H,W,3] uint8."""
    h, w = labels[0].shape
    best = np.full((h, w), -1.0, np.float32)
    arg = np.zeros((h, w), np.int32)
    for i, lab in enumerate(labels):
        dist = cv2.distanceTransform((lab == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        better = dist > best
        best[better] = dist[better]
        arg[better] = i
    stack = np.stack(frames)
    out = stack[arg, np.arange(h)[:, None], np.arange(w)[None, :]]
    keep = best > margin
    if not keep.any():  # the person never leaves a margin anywhere: fill from the least covered pixels
        keep = best >= best.max()
    _, nearest = cv2.distanceTransformWithLabels(
        (~keep).astype(np.uint8),
        cv2.DIST_L2,
        cv2.DIST_MASK_PRECISE,
        labelType=cv2.DIST_LABEL_PIXEL,
    )
    ys, xs = np.nonzero(keep)
    lut_y, lut_x = np.concatenate([[0], ys]), np.concatenate([[0], xs])
    filled = out[lut_y[nearest], lut_x[nearest]]
    filled[keep] = out[keep]
    return filled


def background_step(n: int) -> int:
    """Official subsampling step of the background frames: 5 if N < 100, 20 if N < 10^4, else N // 500."""
    return 5 if n < 100 else 20 if n < 10_000 else n // 500


class _Tools:
    """Per-process models (built once per worker)."""

    def __init__(self, cfg: PrepareConfig) -> None:
        if cfg.bfm is None:
            raise InputError("prepare needs --bfm (the BFM 2009 folder) for the 3DMM fits")
        files = BFMFiles.locate(cfg.bfm)
        data = files.load_front()
        self.face = ParametricFace(data, files.mp468_index(data.n_vertices))
        self.segmenter = None
        if cfg.segmenter_model is not None:
            self.segmenter = MulticlassSegmenter(cfg.segmenter_model)
        self.hubert = None
        if cfg.hubert is not None:
            self.hubert = load_hubert(cfg.hubert).eval()


def _frames(path: Path, cfg: PrepareConfig) -> Iterator[np.ndarray]:
    """The clip's frames at `cfg.fps` (longer side <= 1280 px), at most `cfg.max_frames`, streamed."""
    return islice(iter_frames(path, max_size=1280, fps=cfg.fps), cfg.max_frames)


def _choose_framing(path: Path, n: int, cfg: PrepareConfig):
    """One framing for the whole clip: the median face box of 5 frames spread over its n frames."""
    picks = np.unique(np.linspace(0, n - 1, 5).round().astype(int))
    probes = {}
    for k, img in enumerate(_frames(path, cfg)):
        if k in picks:
            probes[k] = img
        if k >= picks[-1]:
            break
    boxes = []
    with FaceAnalyzer(max_faces=4) as fa:
        for i, img in probes.items():
            faces = fa.detect(img)
            if len(faces) > 1 and faces[1].area >= cfg.several_faces_ratio * faces[0].area:
                raise InputError(f"several faces ({len(faces)}) in frame {i}; training clips need one speaker")
            if faces:
                boxes.append(faces[0].bbox)
    if len(boxes) < max(1, len(picks) // 2):
        raise NoFaceError(f"no face in {len(picks) - len(boxes)} of {len(picks)} probe frames")
    bbox = tuple(np.median(np.array(boxes), axis=0))
    return frame_face(bbox, probes[int(picks[0])].shape[:2], size=cfg.size, mode=cfg.framing)


def process_clip(video: Path, name: str, root: Path, cfg: PrepareConfig, tools: _Tools) -> ClipResult:
    """Prepare one clip into `root/shards/<name>.tar`; raises a Real3DError subclass for a bad clip.

    The video is read twice, streamed (5 probe frames for the framing, then every frame); memory holds the
    encoded images of the clip, not its decoded frames."""
    import torch

    t0 = time.perf_counter()
    n = min(count_frames(video, cfg.fps), cfg.max_frames or sys.maxsize)
    if n < cfg.min_frames:
        raise InputError(f"too short: {n} frames at {cfg.fps:g} fps, need at least {cfg.min_frames}")
    framing = _choose_framing(video, n, cfg)
    q = cfg.jpeg_quality
    per_frame: list[dict[str, bytes]] = []
    segs: list[bytes] = []  # the class maps, PNG
    lms: list[np.ndarray | None] = []
    segmenter = PersonSegmenter()
    try:
        with FaceAnalyzer(max_faces=1) as fa:
            for raw in _frames(video, cfg):
                img = framing.apply(raw)
                lm = fa.track(img)
                lms.append(lm)
                person = segmenter(img)
                if tools.segmenter is not None:
                    segs.append(rec.encode_image(tools.segmenter(img), "png"))
                elif lm is not None:
                    segs.append(rec.encode_image(approximate_parsing(img, lm, person), "png"))
                else:
                    segs.append(b"")  # replaced by the nearest tracked frame's below
                per_frame.append({"gt.jpg": rec.encode_image(img, "jpg", q)})
    finally:
        segmenter.close()
    if len(lms) < cfg.min_frames:
        raise InputError(f"too short: {len(lms)} decodable frames, need at least {cfg.min_frames}")
    lost = [i for i, lm in enumerate(lms) if lm is None]
    if len(lost) > cfg.max_lost * len(lms) or len(lost) == len(lms):
        raise NoFaceError(f"face lost in {len(lost)} of {len(lms)} frames (more than {cfg.max_lost:.0%})")
    good = np.array([i for i, lm in enumerate(lms) if lm is not None])
    for i in lost:  # landmarks and classes of the nearest tracked frame
        j = int(good[np.abs(good - i).argmin()])
        lms[i], segs[i] = lms[j], segs[j]
    landmarks = np.stack(lms).astype(np.float32)  # T x 478 x 3

    n = len(per_frame)
    step = background_step(n)
    sub = list(range(0, n, step))
    bg = static_background(
        [rec.decode_image(per_frame[i]["gt.jpg"]) for i in sub],
        [rec.decode_image(segs[i], gray=True) for i in sub],
    )
    for i in range(n):
        img = rec.decode_image(per_frame[i]["gt.jpg"])
        lab = rec.decode_image(segs[i], gray=True)
        com = np.where((lab == 0)[..., None], bg, img)
        per_frame[i]["com.jpg"] = rec.encode_image(com, "jpg", q)
        per_frame[i]["torso.jpg"] = rec.encode_image(inpaint_torso(img, lab), "jpg", q)
        per_frame[i]["seg.png"] = segs[i]

    fit = fit_video(tools.face, landmarks[:, :468, :2], cfg.size)
    cams = camera_from_pose(fit.euler, fit.trans).float().numpy()
    coeff = torch.cat([fit.exp, fit.euler, fit.trans], 1).float().numpy()  # T x 70

    meta: dict[str, Any] = {
        "source": str(video),
        "fps": cfg.fps,
        "size": cfg.size,
        "num_frames": n,
        "framing_matrix": np.asarray(framing.matrix).tolist(),
        "framing_padded": framing.padded_fraction,
        "landmark_rmse_px224": float(fit.landmark_rmse),
        "lost_frames": len(lost),
        "parsing": "multiclass" if tools.segmenter is not None else "approximate",
        "coeff_layout": {"exp": [0, 64], "euler": [64, 67], "trans": [67, 70]},
    }
    clip_files: dict[str, bytes] = {
        "bg.jpg": rec.encode_image(bg, "jpg", q),
        "id.npy": rec.encode_npy(fit.id[0].float().numpy()),
    }
    if tools.hubert is not None or cfg.f0:
        clip_files.update(_audio_features(video, tools, cfg, meta))
    clip_files["meta.json"] = json.dumps(meta).encode()

    writer = rec.ClipShardWriter(root, name)
    try:
        for ext, data in clip_files.items():
            writer.add(rec.CLIP_KEY, ext, data)
        for i, files in enumerate(per_frame):
            key = rec.frame_key(i)
            for ext, data in files.items():
                writer.add(key, ext, data)
            writer.add(key, "lms.npy", rec.encode_npy(landmarks[i]))
            writer.add(key, "coeff.npy", rec.encode_npy(coeff[i]))
            writer.add(key, "cam.npy", rec.encode_npy(cams[i]))
        writer.close(n, meta)
    except BaseException:
        writer.abort()
        raise
    return ClipResult(name, str(video), "done", frames=n, seconds=time.perf_counter() - t0)


def _audio_features(video: Path, tools: _Tools, cfg: PrepareConfig, meta: dict[str, Any]) -> dict[str, bytes]:

    if not has_audio(video):
        meta["audio"] = "none"
        return {}
    wav = load_audio(video, 16000).samples
    out: dict[str, bytes] = {}
    n50 = None
    if tools.hubert is not None:
        import torch

        with torch.inference_mode():
            feats = hubert_features(tools.hubert, wav)
        n50 = feats.shape[0]
        out["hubert.npy"] = rec.encode_npy(feats.numpy().astype(np.float16))
    if cfg.f0 or tools.hubert is not None:
        out["f0.npy"] = rec.encode_npy(official_f0(wav, n50).astype(np.float32))
    meta["audio"] = "hubert+f0" if tools.hubert is not None else "f0"
    return out


# ------------------------------------------------------------------------------------------ driver
_WORKER_TOOLS: _Tools | None = None


def _worker_init(cfg: PrepareConfig) -> None:
    global _WORKER_TOOLS
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _WORKER_TOOLS = _Tools(cfg)


def _run_one(video: Path, name: str, root: Path, cfg: PrepareConfig, tools: _Tools | None = None) -> ClipResult:
    t0 = time.perf_counter()
    tools = tools or _WORKER_TOOLS
    assert tools is not None
    try:
        return process_clip(video, name, root, cfg, tools)
    except Real3DError as e:
        reason = str(e)
    except (
        cv2.error,
        ValueError,
        RuntimeError,
        OSError,
    ) as e:  # a corrupt file or a degenerate clip
        reason = f"{type(e).__name__}: {e}"
    rec.write_failure(root, name, str(video), reason)
    return ClipResult(name, str(video), "skipped", reason, seconds=time.perf_counter() - t0)


def prepare(inputs: list[str | Path], out: str | Path, cfg: PrepareConfig) -> PrepareSummary:
    """Prepare every video of `inputs` (this job's shard) into the records folder `out`."""
    t0 = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    videos = list_videos(inputs)
    if not videos:
        raise InputError(
            f"no videos found in {', '.join(map(str, inputs))} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    names = clip_names(videos)
    i, n = cfg.shard
    todo = [(v, nm) for k, (v, nm) in enumerate(zip(videos, names)) if k % n == i]
    summary = PrepareSummary()
    work = []
    for v, nm in todo:
        if rec.clip_done(root, nm):
            summary.clips.append(ClipResult(nm, str(v), "resumed"))
        elif (root / "failed" / f"{nm}.json").is_file() and not cfg.retry_failed:
            reason = json.loads((root / "failed" / f"{nm}.json").read_text()).get("reason", "")
            summary.clips.append(ClipResult(nm, str(v), "failed-before", reason))
        else:
            (root / "failed" / f"{nm}.json").unlink(missing_ok=True)
            work.append((v, nm))
    log.info(
        "prepare: %d clips in shard %d/%d, %d to do, %d done before",
        len(todo),
        i,
        n,
        len(work),
        sum(c.status == "resumed" for c in summary.clips),
    )

    def report(r: ClipResult) -> None:
        summary.clips.append(r)
        if r.status == "done":
            log.info("%s: %d frames in %.1f s", r.name, r.frames, r.seconds)
        else:
            log.warning("%s skipped: %s", r.name, r.reason)

    if cfg.workers <= 1 or len(work) <= 1:
        tools = _Tools(cfg) if work else None
        for v, nm in work:
            report(_run_one(v, nm, root, cfg, tools))
    else:
        with ProcessPoolExecutor(
            max_workers=cfg.workers,
            mp_context=get_context("spawn"),
            initializer=_worker_init,
            initargs=(cfg,),
        ) as pool:
            futures = [pool.submit(_run_one, v, nm, root, cfg) for v, nm in work]
            for f in as_completed(futures):
                report(f.result())
    rec.build_index(root)
    summary.seconds = time.perf_counter() - t0
    name = "summary.json" if n == 1 else f"summary-{i}-of-{n}.json"
    tmp = root / f".{name}.{os.getpid()}"
    tmp.write_text(json.dumps(summary.to_json(), indent=1))
    os.replace(tmp, root / name)
    c = summary.counts()
    log.info(
        "prepare finished in %.1f s: %d done, %d resumed, %d skipped (%d skipped before)",
        summary.seconds,
        c.get("done", 0),
        c.get("resumed", 0),
        c.get("skipped", 0),
        c.get("failed-before", 0),
    )
    return summary
