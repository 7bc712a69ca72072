"""One job in its own process: `python -m real3d.serve.worker --settings JSON`, then a job folder on stdin.

Why a process per job (and not a thread): a crash in a native library (MediaPipe, PyAV, torch) ends only that
job; Stop/DELETE can always end a run (SIGTERM sets the pipeline's stop event; a kill after a grace period
catches a run stuck inside one long network call); memory (the neural backend holds GBs) is returned to the
system after every job; and a server killed with SIGKILL takes its workers with it (PR_SET_PDEATHSIG), so a
restarted server never races an orphan. The price, importing the pipeline (~2-5 s), is paid ahead of time:
the job store starts each worker *warm* (imports done) before a job is waiting, and hands it the job folder
on stdin when one arrives.

The worker reads `<job>/job.json`, writes progress to `<job>/status.json` and the latest rendered frame to
`<job>/preview.jpg` (both atomically), renders into `<job>/output.mp4` (the pipeline's writer renames its temp
file at the end), and finally writes `<job>/result.json`: state done / failed (with the user-facing message)
/ cancelled. The server alone writes job.json."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from real3d._stderr import filtered_stderr
from real3d.cpu_memory import keep_freed_memory
from real3d.errors import Cancelled, Real3DError
from real3d.pipeline import Pipeline  # imports every backend: a started worker is warm once this module is loaded
from real3d.serve.options import build_animate_options

log = logging.getLogger("real3d.serve.worker")

STAGE_SPAN = {"source": (0.0, 0.1), "driver": (0.1, 0.2), "render": (0.2, 1.0), "done": (1.0, 1.0)}
"""Share of the whole run that each pipeline stage covers, for one overall progress fraction."""
STATUS_EVERY_S = 0.1
"""Least time between two status.json writes during rendering."""
WARM_MODULES = ("mediapipe", "pocketsphinx", "parselmouth")
"""Third-party packages the pipeline imports only when a run needs them: a warm worker imports them up front."""
PREVIEW_EVERY_S = 0.25
"""Least time between two preview.jpg writes (the first rendered frame is always written at once)."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path` and rename it over `path` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1).encode())


def overall_fraction(stage: str, fraction: float) -> float:
    lo, hi = STAGE_SPAN.get(stage, (0.0, 1.0))
    return lo + (hi - lo) * max(0.0, min(1.0, fraction))


def _die_with_parent(parent: int | None) -> None:
    """Ask Linux to SIGKILL this process when the server that started it dies (no orphans after a crash)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the closed stdin still ends an idle worker
        pass
    if parent is not None and os.getppid() != parent:  # the server died while this process was starting
        os._exit(1)


def warm_up() -> None:
    """Import what the pipeline would import on its first run, so that a job handed to this worker starts at once."""
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # the run will say what is missing
            log.debug("cannot import %s", name)


class StatusWriter:
    """Pipeline progress -> status.json and preview.jpg in the job folder (throttled, atomic)."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self._last_status = 0.0
        self._last_preview = 0.0
        self._stage = ""
        self.previews = 0

    def __call__(self, p) -> None:
        now = time.monotonic()
        if (
            p.stage == "render"
            and p.frame is not None
            and (self.previews == 0 or now - self._last_preview >= PREVIEW_EVERY_S)
        ):
            self._write_preview(p.frame)
            self._last_preview = now
        final = p.stage != "render" or p.done >= p.total
        if final or p.stage != self._stage or now - self._last_status >= STATUS_EVERY_S:
            self._stage = p.stage
            self._last_status = now
            write_json(
                self.job_dir / "status.json",
                {
                    "stage": p.stage,
                    "stage_done": p.done,
                    "stage_total": p.total,
                    "progress": round(overall_fraction(p.stage, p.fraction), 4),
                    "previews": self.previews,
                    "updated": time.time(),
                },
            )

    def _write_preview(self, frame) -> None:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=85)
        write_atomic(self.job_dir / "preview.jpg", buf.getvalue())
        self.previews += 1


def _scrub(message: str, job_dir: Path) -> str:
    """Messages name the server's files: show the client the upload's role name instead of our paths."""
    for prefix in (str(job_dir / "inputs") + os.sep, str(job_dir) + os.sep):
        message = message.replace(prefix, "")
    return message


def run_job(job_dir: Path, settings: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    """Run the job in `job_dir`; returns (and writes) its result.json content. Never raises for bad input."""
    job = json.loads((job_dir / "job.json").read_text())
    files = {role: job_dir / "inputs" / name for role, name in job["inputs"].items()}
    t0 = time.perf_counter()
    status = StatusWriter(job_dir)
    try:
        opts = build_animate_options(job["options"], files, job_dir / "output.mp4", settings)
        res = Pipeline()(opts, on_progress=status, stop=stop)
        result = {"state": "done", "frames": res.frames, "fps": res.fps, "timings": res.timings}
    except Cancelled as e:
        result = {"state": "cancelled", "error": str(e)}
    except Real3DError as e:
        result = {"state": "failed", "error": _scrub(str(e), job_dir), "error_type": type(e).__name__}
    except Exception as e:  # a bug: keep the trace in worker.log, tell the client what happened
        traceback.print_exc()
        result = {
            "state": "failed",
            "error": f"internal error ({type(e).__name__}: {_scrub(str(e), job_dir)}); "
            "see worker.log in the job folder and report it",
            "error_type": type(e).__name__,
        }
    result["seconds"] = time.perf_counter() - t0
    result["previews"] = status.previews
    write_json(job_dir / "result.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real3d.serve.worker", description=__doc__)
    ap.add_argument("--settings", default="{}", help="the server's settings as JSON (neural asset folders, device)")
    ap.add_argument("--parent", type=int, default=None, help="pid of the server (the worker ends if it is gone)")
    ap.add_argument("--ready-file", type=Path, default=None, help="written with this pid once the imports are done")
    args = ap.parse_args(argv)
    _die_with_parent(args.parent)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")
    keep_freed_memory()
    warm_up()
    if args.ready_file is not None:
        write_atomic(args.ready_file, str(os.getpid()).encode())
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the server closed us without a job (shutdown)
    job_dir = Path(line.strip())
    log_fd = os.open(job_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    with filtered_stderr():
        run_job(job_dir, json.loads(args.settings), stop)
    # everything is on disk (result.json last): skip the interpreter's teardown of torch/MediaPipe, which took
    # ~1-2 s on the loaded dev machine and would delay the job's end as the server sees it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
