"""`real3d batch MANIFEST -o OUTDIR`: many runs from a CSV or JSON manifest, resumable and shardable.

A manifest row names its inputs and options:

    source,audio,video,pose_video,background,output,options
    alice.jpg,hello.wav,,,,alice_hello.mp4,"{""seed"": 1}"
    bob.png,,drive.mp4,,beach.jpg,,
    carol.jpg,hi.m4a,,,,,"{""still"": true, ""mouth_amp"": 0.6}"

(JSON: a list of objects with the same keys; `options` an object.) Relative paths are relative to the
manifest's folder. Any option of `real3d animate` may also be a column of its own (`seed`, `still`, ...);
options use AnimateOptions's field names (see `GET /v1/options` of `real3d serve`, or the README).
`output` is a file name inside OUTDIR (default `<row>_<source name>.mp4`).

- `--workers N` renders N rows at once, each in its own process.
- Resumable: after a row succeeds, `OUTDIR/.real3d-batch/<output>.json` records a fingerprint of its inputs'
  contents and its options; a later run skips the row while the output exists and the fingerprint matches.
- One failing row never stops the rest; the summary (`OUTDIR/batch-summary[.shard-I-of-N].csv` and `.json`)
  lists status, seconds and error per row; the exit code is 1 if any row failed.
- `--shard I/N` (0 <= I < N) takes rows I, I+N, I+2N, ...: run N copies (a Slurm job array with
  `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`, a Kubernetes indexed Job with
  `--shard $JOB_COMPLETION_INDEX/N`) on a shared OUTDIR and every row is rendered exactly once, with no
  coordinator.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from real3d.assets import add_asset_arguments
from real3d.cpu_memory import keep_freed_memory
from real3d.errors import InputError, Real3DError
from real3d.pipeline import Pipeline
from real3d.serve.options import OPTION_TYPES, build_animate_options, parse_options

log = logging.getLogger(__name__)

FILE_COLUMNS = ("source", "audio", "video", "pose_video", "background")
"""Manifest columns that name input files."""
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")
STATE_DIR = ".real3d-batch"
"""Folder in OUTDIR with one fingerprint file per finished row."""
FINGERPRINT_VERSION = 1
"""Bumped when what a fingerprint covers changes (old fingerprints then no longer match)."""


@dataclass
class BatchRow:
    """One manifest row, resolved."""

    index: int
    """Position in the manifest (0-based, header not counted)."""
    files: dict[str, Path]
    """Role (source, audio, video, pose_video, background) -> path."""
    options: dict[str, Any]
    """Validated options (AnimateOptions field names)."""
    output: str
    """File name inside OUTDIR."""


@dataclass
class RowResult:
    """How a row went (one line of the summary)."""

    row: int
    """Manifest row (0-based)."""
    output: str
    """File name inside OUTDIR."""
    status: str
    """done, skipped (unchanged since a previous run) or failed."""
    seconds: float = 0.0
    """Wall time of the run (0 for skipped rows)."""
    frames: int | None = None
    """Frames written."""
    error: str | None = None
    """The message, for failed rows."""


@dataclass
class BatchConfig:
    """What `real3d batch` is told."""

    manifest: Path
    """CSV or JSON manifest."""
    outdir: Path
    """Folder for the videos, the fingerprints and the summary."""
    workers: int = 1
    """Rows rendered at once (each in its own process when more than 1)."""
    shard: tuple[int, int] = (0, 1)
    """(I, N): take rows with index % N == I."""
    force: bool = False
    """Re-render rows even when their outputs are up to date."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Neural asset folders (checkpoints, bfm, hubert, segmenter_model) and device, for every row."""
    quiet: bool = False
    """No per-row progress lines."""


# ---------------------------------------------------------------------------------------------- manifest
def _safe_output_name(name: str, index: int) -> str:
    name = name.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise InputError(f"row {index}: output {name!r} must be a plain file name inside OUTDIR (no folders)")
    if not name.lower().endswith(OUTPUT_SUFFIXES):
        name += ".mp4"
    return name


def read_manifest(path: Path) -> list[BatchRow]:
    """Parse and validate a CSV/JSON manifest. Raises InputError for what makes the whole manifest unusable
    (unreadable, unknown columns, an unknown option, duplicate outputs); missing input files are left to the row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}; give a CSV or JSON file with one row per video")
    base = path.resolve().parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the manifest {path} ({e}); save it as UTF-8 CSV or JSON") from e
    from_text = True
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise InputError(f"the manifest {path} is not valid JSON ({e})") from None
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            raise InputError(f"the JSON manifest {path} must be a list of objects (one per video)")
        from_text = False
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise InputError(f"the manifest {path} is empty; its first line names the columns (source,audio,...)")
        raw = [dict(r) for r in reader]
    known = {*FILE_COLUMNS, "output", "options", *OPTION_TYPES}
    rows: list[BatchRow] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(raw):
        unknown = sorted(k for k in r if k is not None and k not in known)
        if None in r or unknown:
            raise InputError(
                f"row {i} of {path}: unknown column(s) {', '.join(map(repr, unknown)) or '(extra cells)'}; "
                f"columns are {', '.join((*FILE_COLUMNS, 'output', 'options'))} and the option names "
                f"{', '.join(sorted(OPTION_TYPES))}"
            )
        files = {}
        for col in FILE_COLUMNS:
            v = r.get(col)
            if v not in (None, ""):
                p = Path(str(v).strip()).expanduser()
                files[col] = p if p.is_absolute() else base / p
        if "source" not in files:
            raise InputError(f"row {i} of {path}: no source photo; every row needs a 'source'")
        opts_raw = r.get("options")
        try:
            options = parse_options(opts_raw if isinstance(opts_raw, dict) else (opts_raw or None), from_text=False)
            cols = {k: v for k, v in r.items() if k in OPTION_TYPES}
            options.update(parse_options(cols, from_text=from_text))
        except InputError as e:
            raise InputError(f"row {i} of {path}: {e}") from None
        out = r.get("output")
        name = _safe_output_name(str(out), i) if out not in (None, "") else f"{i:05d}_{files['source'].stem}.mp4"
        if name in seen:
            raise InputError(f"rows {seen[name]} and {i} of {path} both write {name}; give each row its own output")
        seen[name] = i
        rows.append(BatchRow(index=i, files=files, options=options, output=name))
    return rows


def shard_rows(rows: list[BatchRow], shard: tuple[int, int]) -> list[BatchRow]:
    """Rows I, I+N, I+2N, ... of the manifest (by manifest position)."""
    i, n = shard
    return [r for r in rows if r.index % n == i]


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r} must look like I/N, e.g. 0/4 (0 <= I < N)") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {text}: need 0 <= I < N (e.g. 0/4 ... 3/4)")
    return i, n


# ---------------------------------------------------------------------------------------------- fingerprints
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(row: BatchRow, settings: dict[str, Any]) -> str:
    """sha256 over the inputs' contents, the options, the output name and the server-side settings."""
    h = hashlib.sha256()
    doc = {
        "v": FINGERPRINT_VERSION,
        "options": row.options,
        "output": row.output,
        "files": {role: _file_digest(p) for role, p in sorted(row.files.items())},
        "settings": {k: str(v) for k, v in sorted(settings.items())},
    }
    h.update(json.dumps(doc, sort_keys=True).encode())
    return h.hexdigest()


def _state_path(outdir: Path, row: BatchRow) -> Path:
    return outdir / STATE_DIR / f"{row.output}.json"


def is_up_to_date(outdir: Path, row: BatchRow, digest: str) -> bool:
    state = _state_path(outdir, row)
    if not ((outdir / row.output).is_file() and state.is_file()):
        return False
    try:
        return json.loads(state.read_text()).get("fingerprint") == digest
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------- running
def run_row(row: BatchRow, outdir: Path, settings: dict[str, Any], digest: str) -> RowResult:
    """Render one row (in this process); a Real3DError becomes a failed result, never an exception."""
    t0 = time.perf_counter()
    try:
        for role, p in row.files.items():
            if not p.is_file():
                raise InputError(f"{role} file not found: {p}")
        opts = build_animate_options(row.options, row.files, outdir / row.output, settings)
        res = Pipeline()(opts)
    except Real3DError as e:
        return RowResult(row.index, row.output, "failed", time.perf_counter() - t0, error=str(e))
    except Exception as e:  # a bug on one row must not stop the others
        log.exception("row %d", row.index)
        return RowResult(
            row.index, row.output, "failed", time.perf_counter() - t0, error=f"internal error ({type(e).__name__}: {e})"
        )
    secs = time.perf_counter() - t0
    state = _state_path(outdir, row)
    state.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.with_name(state.name + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": digest, "seconds": secs, "frames": res.frames, "finished": time.time()}))
    tmp.replace(state)
    return RowResult(row.index, row.output, "done", secs, frames=res.frames)


def _worker_init() -> None:
    keep_freed_memory()
    warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def run_batch(config: BatchConfig) -> list[RowResult]:
    """Run the manifest's rows of this shard; returns one result per row (also written to the summary)."""
    rows = shard_rows(read_manifest(config.manifest), config.shard)
    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    results: dict[int, RowResult] = {}
    todo: list[tuple[BatchRow, str]] = []
    for row in rows:
        try:
            digest = fingerprint(row, config.settings)
        except OSError as e:  # a missing input: the row fails, the rest go on
            results[row.index] = RowResult(
                row.index,
                row.output,
                "failed",
                error=f"cannot read an input of this row ({e.strerror or e}: {e.filename})",
            )
            continue
        if not config.force and is_up_to_date(outdir, row, digest):
            results[row.index] = RowResult(row.index, row.output, "skipped")
        else:
            todo.append((row, digest))
    n_total = len(rows)

    def report(res: RowResult) -> None:
        results[res.row] = res
        if not config.quiet:
            what = f"failed: {res.error}" if res.status == "failed" else f"{res.status} in {res.seconds:.1f} s"
            print(f"[{len(results)}/{n_total}] row {res.row} -> {res.output}: {what}", file=sys.stderr, flush=True)

    if config.workers <= 1:
        for row, digest in todo:
            report(run_row(row, outdir, config.settings, digest))
    else:
        _run_pool(todo, outdir, config, report)
    ordered = [results[r.index] for r in rows]
    write_summary(outdir, ordered, config.shard)
    return ordered


def _run_pool(todo: list[tuple[BatchRow, str]], outdir: Path, config: BatchConfig, report) -> None:
    """Rows on `config.workers` processes. A row whose process dies (a native crash) breaks the pool: the rows
    in flight are retried once in a fresh pool; one that breaks a pool twice fails with that reason."""
    pending = list(todo)
    crashes: dict[int, int] = {}
    ctx = multiprocessing.get_context("spawn")
    while pending:
        with ProcessPoolExecutor(max_workers=config.workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {
                pool.submit(run_row, row, outdir, config.settings, digest): (row, digest) for row, digest in pending
            }
            pending = []
            broken = False
            waiting = set(futures)
            while waiting:
                done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for fut in done:
                    row, digest = futures[fut]
                    try:
                        report(fut.result())
                    except BrokenProcessPool:
                        broken = True
                        crashes[row.index] = crashes.get(row.index, 0) + 1
                        if crashes[row.index] >= 2:
                            report(
                                RowResult(
                                    row.index,
                                    row.output,
                                    "failed",
                                    error="the worker process crashed while rendering this row (twice)",
                                )
                            )
                        else:
                            pending.append((row, digest))
            if broken:
                log.warning("a worker process crashed; retrying %d row(s) in a fresh pool", len(pending))


def write_summary(outdir: Path, results: list[RowResult], shard: tuple[int, int]) -> tuple[Path, Path]:
    """`batch-summary[.shard-I-of-N].csv` and `.json` in OUTDIR (written atomically)."""
    stem = "batch-summary" if shard == (0, 1) else f"batch-summary.shard-{shard[0]}-of-{shard[1]}"
    csv_path, json_path = outdir / f"{stem}.csv", outdir / f"{stem}.json"
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(RowResult.__dataclass_fields__))
        w.writeheader()
        for r in results:
            d = asdict(r)
            d["seconds"] = f"{r.seconds:.2f}"
            w.writerow(d)
    tmp.replace(csv_path)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in results], indent=1))
    tmp.replace(json_path)
    return csv_path, json_path


# ---------------------------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> None:
    """Register `real3d batch`."""
    p = subparsers.add_parser(
        "batch",
        help="render every row of a CSV/JSON manifest (resumable, --workers, --shard I/N for clusters)",
        description=__doc__.split("\n\n")[0] + " Columns: source, audio or video, pose_video, background, output, "
        "options (JSON) and option names. See the README's batch section.",
    )
    p.add_argument("manifest", help="CSV or JSON manifest, one row per video")
    p.add_argument("-o", "--outdir", required=True, help="folder for the videos and the summary")
    p.add_argument("--workers", type=int, default=1, help="rows rendered at once, one process each (default 1)")
    p.add_argument("--shard", default="0/1", help="I/N: take rows I, I+N, ... (0 <= I < N); default all rows")
    p.add_argument("--force", action="store_true", help="re-render rows whose outputs are up to date")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-row progress lines")
    n = p.add_argument_group("neural backend (rows with the option backend=neural)")
    add_asset_arguments(n, device_default=None)
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise InputError("--workers must be at least 1")
    settings = {
        k: getattr(args, k) for k in ("checkpoints", "bfm", "hubert", "segmenter_model", "device") if getattr(args, k)
    }
    config = BatchConfig(
        manifest=Path(args.manifest),
        outdir=Path(args.outdir),
        workers=args.workers,
        shard=parse_shard(args.shard),
        force=args.force,
        settings=settings,
        quiet=args.quiet,
    )
    results = run_batch(config)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    stem = "batch-summary" if config.shard == (0, 1) else f"batch-summary.shard-{config.shard[0]}-of-{config.shard[1]}"
    print(
        f"{len(results)} row(s): {counts['done']} done, {counts['skipped']} skipped (up to date), "
        f"{counts['failed']} failed; summary: {config.outdir / (stem + '.csv')}"
    )
    return 1 if counts["failed"] else 0
