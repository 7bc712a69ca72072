"""Evaluation protocols of the paper (Sec. 4.2, App. D.1) over cases, methods and metrics.

Protocols
  * ``same``  same-identity reenactment: source = the clip's first frame, driver = the clip, ground truth = the
    clip; rendered at the clip's frame rate with framing "auto" so output frame k shows the clip's frame k.
  * ``cross`` cross-identity reenactment: every source photo x every driving clip; no ground truth (motion is
    compared with the driver's, identity with the source's).
  * ``audio`` audio-driven: source + speech; when the speech is a real video's audio track, that video is the
    reference for mouth motion (and the source is its first frame).

Methods
  * ``mesh``   the real3d pipeline (mesh backend); its videos are cached by a key of inputs + options;
  * ``static`` the source frame repeated (the floor: no motion at all);
  * ``gt``     the reference clip itself (the ceiling; for cross-identity: the driver, whose identity differs).
  * ``envelope`` (audio cases with a reference only) the speech's own loudness envelope used as the mouth-opening
    curve: the floor any audio-driven mouth must beat. It has no video, only the mouth-curve metrics.

Every (case, method) gives a `CaseResult` (JSON per case); `summarize` turns them into a markdown table of
mean and 95% interval per metric.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from real3d.errors import InputError
from real3d.eval import metrics as M
from real3d.eval import plugins as P
from real3d.eval.plugins import FidMetric
from real3d.face.bfm import ParametricFace
from real3d.face.framing import frame_face
from real3d.face.landmarks import FaceAnalyzer
from real3d.io.audio import has_audio, load_audio
from real3d.io.image import load_image
from real3d.io.video import VIDEO_SUFFIXES, first_frame, iter_frames, probe_video
from real3d.pipeline import AnimateOptions, Pipeline

log = logging.getLogger(__name__)

Protocol = Literal["same", "cross", "audio"]
Method = Literal["mesh", "static", "gt", "envelope"]
PROTOCOLS: tuple[Protocol, ...] = ("same", "cross", "audio")
METHODS: tuple[Method, ...] = ("mesh", "static", "gt", "envelope")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".m4a", ".ogg", ".aac"}
CACHE_VERSION = 2
"""Bump when the generated videos of the same inputs and options would change."""


@dataclass(frozen=True)
class Case:
    """One evaluation input."""

    protocol: Protocol
    """Which protocol it belongs to."""
    name: str
    """Short unique name (file stem based)."""
    source: Path
    """Portrait photo, or a video whose first frame is the source."""
    driver: Path | None = None
    """Driving video (same / cross)."""
    audio: Path | None = None
    """Driving speech: audio file or a video's audio track (audio protocol)."""
    reference: Path | None = None
    """Real video the result is compared with (GT / driver / speech video); None when there is none."""


@dataclass
class EvalConfig:
    """Options of one evaluation run."""

    out_dir: Path = Path("eval_out")
    """Where case JSONs, the summary and (by default) the cache go."""
    cache_dir: Path | None = None
    """Generated-video cache (default: out_dir / "cache")."""
    methods: tuple[Method, ...] = METHODS
    """Methods evaluated on every case."""
    max_frames: int | None = None
    """Evaluate at most this many frames per case (None = whole clips)."""
    audio_fps: float = 25.0
    """Frame rate of audio-driven outputs without a reference video."""
    framing: Literal["auto", "crop", "full"] = "auto"
    """Portrait framing passed to the pipeline."""
    seed: int = 0
    """Pipeline seed (blinks, idle motion)."""
    id_every: int = 5
    """Identity (dlib / ArcFace) on every n-th frame."""
    visible_watermark: bool = False
    """Draw the visible label in generated videos (off: it would count as error in the pixel metrics; the
    invisible provenance mark stays on)."""
    lpips: tuple[str, str, str] | None = None
    """(backbone "alex"|"vgg", backbone weights, head weights) to enable LPIPS."""
    fid: str | None = None
    """Inception-v3 weights to enable FID."""
    arcface: str | None = None
    """IResNet weights to enable ArcFace CSIM."""
    syncnet: str | None = None
    """SyncNet weights to enable LSE-C / LSE-D."""
    bfm: str | None = None
    """A BFM folder to enable AED / APD (3DMM fits of generated and reference landmarks)."""


@dataclass
class CaseResult:
    """Metrics of one method on one case."""

    protocol: Protocol
    """The case's protocol."""
    case: str
    """The case's name."""
    method: Method
    """What was evaluated: the mesh pipeline or a baseline."""
    frames: int
    """Frames compared."""
    fps: float
    """Their frame rate."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Scalar metrics by name (NaN when not computable)."""
    inputs: dict[str, str | None] = field(default_factory=dict)
    """The case's files."""
    video: str | None = None
    """The generated (cached) video, for mesh."""
    seconds: float = 0.0
    """Wall time of this evaluation (generation included)."""

    def to_json(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- cases
def _files(folder: Path | None, suffixes: set[str]) -> list[Path]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass a folder of clips/photos/audio or use --manifest")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())


def cases_from_folders(
    clips: Path | None, sources: Path | None, audios: Path | None, protocols: tuple[Protocol, ...] = PROTOCOLS
) -> list[Case]:
    """same: every clip; cross: every photo x every clip; audio: every clip with sound (its own first frame
    and reference) and every audio file x every photo (no reference)."""

    vids, imgs, auds = _files(clips, VIDEO_SUFFIXES), _files(sources, IMAGE_SUFFIXES), _files(audios, AUDIO_SUFFIXES)
    out: list[Case] = []
    if "same" in protocols:
        out += [Case("same", v.stem, source=v, driver=v, reference=v) for v in vids]
    if "cross" in protocols:
        out += [Case("cross", f"{s.stem}-{v.stem}", source=s, driver=v, reference=v) for s in imgs for v in vids]
    if "audio" in protocols:
        out += [Case("audio", v.stem, source=v, audio=v, reference=v) for v in vids if probe_video(v).has_audio]
        out += [Case("audio", f"{s.stem}-{a.stem}", source=s, audio=a) for a in auds for s in imgs]
    return out


def cases_from_manifest(path: Path) -> list[Case]:
    """Cases from a CSV (header: protocol,source,driver,audio,reference[,name]) or a JSON list of such objects.
    Relative paths are relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} not found")
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise InputError(
                f"{path}: a JSON manifest is a list of objects with protocol/source/driver/audio/reference"
            )
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise InputError(f"manifest {path} must be .csv or .json")
    base = path.parent
    out = []
    for i, row in enumerate(rows):

        def p(key: str) -> Path | None:
            v = str(row.get(key) or "").strip()
            if not v:
                return None
            q = Path(v).expanduser()
            q = q if q.is_absolute() else base / q
            if not q.exists():
                raise InputError(f"{path} row {i + 1}: {key} {q} does not exist")
            return q

        proto = (row.get("protocol") or "").strip()
        if proto not in PROTOCOLS:
            raise InputError(f"{path} row {i + 1}: protocol must be one of {PROTOCOLS}, got {proto!r}")
        src, drv, aud, ref = p("source"), p("driver"), p("audio"), p("reference")
        if src is None:
            raise InputError(f"{path} row {i + 1}: no source")
        if proto in ("same", "cross") and drv is None:
            raise InputError(f"{path} row {i + 1}: {proto} needs a driver video")
        if proto == "audio" and aud is None:
            raise InputError(f"{path} row {i + 1}: audio needs an audio file")
        if proto == "same" and ref is None:
            ref = drv
        if proto == "cross" and ref is None:
            ref = drv
        name = (row.get("name") or "").strip() or "-".join(dict.fromkeys(x.stem for x in (src, drv or aud) if x))
        out.append(Case(proto, name, src, drv, aud, ref))  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------------------------------ generation
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(case: Case, fps: float, n_frames: int | None, cfg: EvalConfig) -> str:
    """Hash of everything the generated video depends on: input file contents and pipeline options."""
    desc = {
        "version": CACHE_VERSION,
        "backend": "mesh",
        "source": _file_digest(case.source),
        "source_is_video": case.source.suffix.lower() in VIDEO_SUFFIXES,
        "driver": _file_digest(case.driver) if case.driver else None,
        "audio": _file_digest(case.audio) if case.audio else None,
        "fps": round(float(fps), 6),
        "frames": n_frames,
        "framing": cfg.framing,
        "seed": cfg.seed,
        "visible_watermark": cfg.visible_watermark,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]


def source_image(path: Path) -> np.ndarray:
    """The source as RGB uint8: a photo, or a video's first frame."""
    return first_frame(path) if path.suffix.lower() in VIDEO_SUFFIXES else load_image(path)


def generate(case: Case, fps: float, n_frames: int | None, cfg: EvalConfig) -> Path:
    """The mesh pipeline's video for a case, from the cache when the same inputs and options were rendered."""

    cache = Path(cfg.cache_dir or Path(cfg.out_dir) / "cache")
    cache.mkdir(parents=True, exist_ok=True)
    key = cache_key(case, fps, n_frames, cfg)
    out = cache / f"{case.protocol}-{case.name}-{key}.mp4"
    if out.is_file():
        log.info("cached: %s", out)
        return out
    opts = AnimateOptions(
        source=case.source,
        output=out,
        video=case.driver,
        audio=case.audio,
        fps=fps,
        framing=cfg.framing,
        seed=cfg.seed,
        max_seconds=None if n_frames is None else n_frames / fps,
        visible_watermark=cfg.visible_watermark,
        quiet=True,
    )
    Pipeline()(opts)
    out.with_suffix(".json").write_text(
        json.dumps(
            {"case": _case_json(case), "fps": fps, "frames": n_frames, "framing": cfg.framing, "seed": cfg.seed},
            indent=1,
        )
    )
    return out


def _case_json(case: Case) -> dict[str, str | None]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(case).items()}


def read_frames(path: Path, fps: float | None, limit: int | None) -> list[np.ndarray]:
    """RGB frames of a video (resampled to `fps` when given), at most `limit`."""
    from itertools import islice

    return list(islice(iter_frames(path, fps=fps), limit))


def framed_source(image: np.ndarray, framing: str) -> np.ndarray:
    """The 512x512 crop the pipeline makes of a photo (the 'static' baseline of photo sources)."""

    with FaceAnalyzer() as fa:
        faces = fa.detect(image)
    if not faces:
        raise InputError("no face in the source photo; cannot make the static baseline")
    return frame_face(faces[0].bbox, image.shape[:2], mode=framing).apply(image)  # type: ignore[arg-type]


def track_landmarks(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """MediaPipe landmarks ([478,3] px) of every frame, tracking mode; None where no face."""

    with FaceAnalyzer() as fa:
        return [fa.track(f) for f in frames]


# ----------------------------------------------------------------------------------------- evaluation
class MetricModels:
    """Identity model and plug-in metrics, built once per process from the config."""

    def __init__(self, cfg: EvalConfig) -> None:

        lp = cfg.lpips
        self.lpips = P.LpipsMetric(lp[1], lp[2], lp[0]) if lp else None  # type: ignore[arg-type]
        self.fid = P.FidMetric(cfg.fid) if cfg.fid else None
        self.arcface = P.ArcFaceMetric(cfg.arcface) if cfg.arcface else None
        self.sync = P.SyncMetric(cfg.syncnet) if cfg.syncnet else None
        self.dlib = M.DlibIdentity()  # its model files load on first use, once per process
        self.face = None
        if cfg.bfm:
            self.face = ParametricFace.from_dir(cfg.bfm)


def evaluate_case(
    case: Case, method: Method, cfg: EvalConfig, plugins: MetricModels | None = None
) -> CaseResult | None:
    """Metrics of `method` on `case`; None when the method does not apply (gt without a reference)."""
    import time

    t0 = time.perf_counter()
    if method == "gt" and case.reference is None:
        return None
    if method == "envelope":
        return _envelope_case(case, cfg, t0)
    plugins = plugins or MetricModels(cfg)
    ref_path = case.reference
    fps = (
        probe_video(ref_path).fps
        if ref_path is not None
        else (probe_video(case.driver).fps if case.driver is not None else cfg.audio_fps)
    )
    src = source_image(case.source)
    from_video = case.source.suffix.lower() in VIDEO_SUFFIXES
    ref = read_frames(ref_path, fps, cfg.max_frames) if ref_path is not None else None
    video = None
    if method == "mesh":
        video = generate(case, fps, cfg.max_frames, cfg)
        gen = read_frames(video, None, cfg.max_frames)
    elif method == "gt":
        gen = list(ref)  # type: ignore[arg-type]
    else:
        still = src if from_video else framed_source(src, cfg.framing)
        if ref is not None:
            n = len(ref)
        else:  # audio without a reference video: as long as the speech (capped like the mesh output)
            n = max(1, int(round(len(load_audio(case.audio, 16000, True).samples) / 16000 * fps)))
            n = min(n, cfg.max_frames or n)
        gen = [still] * n
    n = min(len(gen), len(ref)) if ref is not None else len(gen)
    gen = gen[:n]
    ref = ref[:n] if ref is not None else None
    if ref is not None and gen and gen[0].shape != ref[0].shape:  # compare at the reference's resolution
        h, w = ref[0].shape[:2]
        gen = [cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA) for g in gen]

    m: dict[str, float] = {}
    lg = track_landmarks(gen)
    width = gen[0].shape[1]
    m["detect_rate"] = M.detection_rate(lg)
    m["jitter_px512"] = M.landmark_jitter(lg, width)
    mo_g = M.mouth_opening(lg)
    m["mouth_open_std"] = float(np.nanstd(mo_g)) if np.isfinite(mo_g).any() else float("nan")
    lr = track_landmarks(ref) if ref is not None else None
    if case.protocol == "same":
        m["L1"] = float(np.mean([M.l1(a, b) for a, b in zip(gen, ref)]))  # type: ignore[arg-type]
        m["PSNR"] = M.psnr(np.stack(gen), np.stack(ref))  # type: ignore[arg-type]  # MSE pooled over the frames
        m["SSIM"] = float(np.mean([M.ssim(a, b) for a, b in zip(gen, ref)]))  # type: ignore[arg-type]
        m["AKD_px512"] = M.akd(lg, lr, width)
        m["pose_err_deg"] = _nanmean(M.head_pose_error(lg, lr))
        if plugins.lpips is not None:
            m["LPIPS"] = float(np.mean(plugins.lpips(gen, ref)))  # type: ignore[arg-type]
    if lr is not None:
        m["mouth_corr"] = M.mouth_correlation(lg, lr)
        if case.protocol == "audio":
            mo_r = M.mouth_opening(lr)
            m["mouth_corr_best_lag"], m["mouth_best_lag"] = M.lagged_correlation(mo_g, mo_r, 2)
            m["mouth_sd_ratio"] = float(np.nanstd(mo_g) / np.nanstd(mo_r)) if np.nanstd(mo_r) > 0 else float("nan")
        if case.protocol == "cross":
            m["pose_rel_err_deg"] = _nanmean(M.relative_pose_error(lg, lr))
        if plugins.face is not None and case.protocol in ("same", "cross"):
            m["AED"], m["APD"] = M.expression_pose_distance(plugins.face, lg, lr, gen[0].shape[:2])
    ident = plugins.dlib.score(src, gen, lg, every=cfg.id_every)
    m["CSIM_dlib"], m["dlib_dist"] = ident.csim, ident.distance
    if plugins.arcface is not None:
        with_lm = track_landmarks([src])[0]
        every = cfg.id_every
        m["CSIM_arcface"] = (
            plugins.arcface(src, with_lm, gen[::every], lg[::every]) if with_lm is not None else float("nan")
        )
    if plugins.sync is not None and (case.audio is not None or case.driver is not None):
        speech = case.audio or case.driver
        if has_audio(speech):
            s = plugins.sync(gen, lg, fps, load_audio(speech, 16000, True).samples)
            m["LSE_D"], m["LSE_C"] = s.lse_d, s.lse_c
    if plugins.fid is not None:
        feats = plugins.fid.features(gen)
        fdir = Path(cfg.out_dir) / "features"
        fdir.mkdir(parents=True, exist_ok=True)
        np.save(fdir / f"{case.protocol}-{case.name}-{method}.npy", feats)
        real = ref if ref is not None else [src if from_video else framed_source(src, cfg.framing)]
        np.save(fdir / f"{case.protocol}-{case.name}-real.npy", plugins.fid.features(real))
    return CaseResult(
        case.protocol,
        case.name,
        method,
        n,
        float(fps),
        m,
        _case_json(case),
        None if video is None else str(video),
        time.perf_counter() - t0,
    )


def _envelope_case(case: Case, cfg: EvalConfig, t0: float) -> CaseResult | None:
    """The `envelope` baseline of an audio case with a reference clip: the loudness envelope of the speech
    (`real3d.eval.metrics.loudness_envelope`) against the clip's mouth-opening curve; None for other cases."""
    import time

    if case.protocol != "audio" or case.reference is None or case.audio is None or not has_audio(case.audio):
        return None
    fps = probe_video(case.reference).fps
    ref = read_frames(case.reference, fps, cfg.max_frames)
    mo_r = M.mouth_opening(track_landmarks(ref))
    env = M.loudness_envelope(load_audio(case.audio, 16000, True).samples, len(ref), fps)
    m = {"mouth_corr": M.pearson(env, mo_r)}
    m["mouth_corr_best_lag"], m["mouth_best_lag"] = M.lagged_correlation(env, mo_r, 2)
    return CaseResult(
        case.protocol, case.name, "envelope", len(ref), float(fps), m, _case_json(case), None, time.perf_counter() - t0
    )


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


# ------------------------------------------------------------------------------------------ summaries
METRIC_ORDER = (
    "L1",
    "PSNR",
    "SSIM",
    "LPIPS",
    "AKD_px512",
    "AED",
    "APD",
    "pose_err_deg",
    "pose_rel_err_deg",
    "mouth_corr",
    "mouth_corr_best_lag",
    "mouth_best_lag",
    "mouth_sd_ratio",
    "CSIM_dlib",
    "dlib_dist",
    "CSIM_arcface",
    "LSE_D",
    "LSE_C",
    "FID",
    "detect_rate",
    "jitter_px512",
    "mouth_open_std",
)
HIGHER_BETTER = {
    "PSNR",
    "SSIM",
    "mouth_corr",
    "mouth_corr_best_lag",
    "CSIM_dlib",
    "CSIM_arcface",
    "LSE_C",
    "detect_rate",
}
DISPLAY = {
    "AKD_px512": "AKD@512px",
    "pose_err_deg": "pose err °",
    "pose_rel_err_deg": "rel. pose err °",
    "mouth_corr": "mouth corr",
    "mouth_corr_best_lag": "mouth corr ±2f",
    "mouth_best_lag": "best lag (f)",
    "mouth_sd_ratio": "mouth sd ratio",
    "CSIM_dlib": "CSIM-dlib",
    "dlib_dist": "dlib dist",
    "CSIM_arcface": "CSIM-ArcFace",
    "LSE_D": "LSE-D",
    "LSE_C": "LSE-C",
    "detect_rate": "face rate",
    "jitter_px512": "jitter@512px",
    "mouth_open_std": "mouth-open sd",
}
"""Column titles of the markdown table (JSON keys stay as they are)."""
NO_DIRECTION = {"mouth_open_std", "mouth_best_lag", "mouth_sd_ratio"}
"""Descriptive columns (how much the mouth moves), neither better high nor low."""


def fid_by_group(results: list[CaseResult], out_dir: Path) -> dict[tuple[str, str], float]:
    """FID per (protocol, method) from the saved features (generated frames vs the cases' real frames)."""

    fdir = Path(out_dir) / "features"
    groups: dict[tuple[str, str], tuple[list, list]] = {}
    for r in results:
        g, real = fdir / f"{r.protocol}-{r.case}-{r.method}.npy", fdir / f"{r.protocol}-{r.case}-real.npy"
        if g.is_file() and real.is_file():
            a, b = groups.setdefault((r.protocol, r.method), ([], []))
            a.append(np.load(g))
            b.append(np.load(real))
    out = {}
    for key, (a, b) in groups.items():
        fa, fb = np.concatenate(a), np.concatenate(b)
        out[key] = FidMetric.distance(fa, fb) if len(fa) > 1 and len(fb) > 1 else float("nan")
    return out


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.4g}" if abs(x) < 10 else f"{x:.2f}"


def summarize(results: list[CaseResult], fid: dict[tuple[str, str], float] | None = None) -> tuple[str, dict]:
    """Markdown tables (one per protocol: rows = methods, cells = mean [95% interval]) and the same as a dict."""
    fid = fid or {}
    lines: list[str] = []
    data: dict = {}
    for proto in PROTOCOLS:
        rs = [r for r in results if r.protocol == proto]
        if not rs:
            continue
        methods = [m for m in METHODS if any(r.method == m for r in rs)]
        names = [
            k
            for k in METRIC_ORDER
            if any(k in r.metrics for r in rs) or (k == "FID" and any(p == proto for p, _ in fid))
        ]
        heads = [DISPLAY.get(n, n) + ("" if n in NO_DIRECTION else " ↑" if n in HIGHER_BETTER else " ↓") for n in names]
        lines += [
            f"### {proto} ({len({r.case for r in rs})} cases)",
            "",
            "| method | frames | " + " | ".join(heads) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for meth in methods:
            mr = [r for r in rs if r.method == meth]
            cells = []
            for n in names:
                if n == "FID":
                    v = fid.get((proto, meth), float("nan"))
                    data.setdefault(proto, {}).setdefault(meth, {})[n] = {"mean": v}
                    cells.append(_fmt(v))
                    continue
                iv = M.mean_ci95([r.metrics.get(n, float("nan")) for r in mr])
                data.setdefault(proto, {}).setdefault(meth, {})[n] = asdict(iv)
                cell = _fmt(iv.mean)
                if iv.n >= 2 and math.isfinite(iv.low):
                    cell += f" [{_fmt(iv.low)}, {_fmt(iv.high)}]"
                cells.append(cell)
            lines.append(f"| {meth} | {sum(r.frames for r in mr)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines), data


def case_tables(results: list[CaseResult]) -> str:
    """Markdown tables of every (case, method) row, one table per protocol."""
    lines: list[str] = []
    for proto in PROTOCOLS:
        rs = [r for r in results if r.protocol == proto]
        if not rs:
            continue
        names = [k for k in METRIC_ORDER if any(k in r.metrics for r in rs)]
        lines += [
            f"#### {proto}, per case",
            "",
            "| case | method | frames | " + " | ".join(DISPLAY.get(n, n) for n in names) + " |",
            "|---|---|---|" + "---|" * len(names),
        ]
        for r in rs:
            cells = [_fmt(r.metrics.get(n, float("nan"))) for n in names]
            lines.append(f"| {r.case} | {r.method} | {r.frames} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
