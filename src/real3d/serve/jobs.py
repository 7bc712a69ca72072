"""The on-disk job store and its worker slots: accepted work survives a server restart.

A job is a folder `<root>/<id>/` (id = 32 hex digits, made by the server):

    job.json      state, options, input names, times, attempts, error (written by the server only, atomically)
    inputs/       the uploads, named by the server after their role and content (`source.png`, `audio.wav`)
    status.json   stage and progress of the running attempt (written by its worker)
    preview.jpg   the latest rendered frame (written by its worker)
    result.json   how the attempt ended (written by its worker)
    output.mp4    the video; served only once job.json says `done`
    worker.log    the worker's stderr

States: queued -> running -> done | failed | cancelled. `--workers` slots each keep one warm worker process
(see `real3d.serve.worker`) and run the oldest queued job. On start the store re-queues `queued` jobs, re-runs
a `running` one (its run was cut by a restart) until it has had `max_attempts` starts, after which it is
failed with the reason, and deletes folders of uploads that never became a job."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from real3d.errors import InputError, Real3DError
from real3d.serve.worker import write_json

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES = frozenset({"done", "failed", "cancelled"})
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RESTART_REASON = "interrupted by a server restart"


class QueueFull(Real3DError):
    """Too many jobs are waiting; the client should retry later (HTTP 429)."""

    exit_code = 75


class JobNotFound(Real3DError):
    """No job with that id (HTTP 404)."""

    exit_code = 2


@dataclass
class JobStoreConfig:
    """Where jobs live and how many run at once."""

    root: Path
    """The jobs folder (created if missing); everything of every job lives under it."""
    workers: int = 1
    """Jobs rendered at the same time (one process each)."""
    max_queued: int = 100
    """Jobs that may wait in the queue; more are refused (429)."""
    max_attempts: int = 2
    """Starts a job may get when server restarts cut its runs; after that it is failed with the reason."""
    cancel_grace_s: float = 10.0
    """After a cancel, how long a worker may take to stop by itself before it is killed."""
    warm: bool = True
    """Start each worker (it imports the pipeline) before a job is waiting, so the job starts at once; False starts
    it when the job arrives (the cold cost, measured by the benchmark)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Server settings passed to every run: neural asset folders (checkpoints, bfm, hubert, segmenter_model)
    and the torch device."""


@dataclass
class Job:
    """What job.json holds."""

    id: str
    """32 hex digits, made by the server."""
    state: JobState
    """queued, running, done, failed or cancelled."""
    options: dict[str, Any]
    """Validated client options (AnimateOptions field names)."""
    inputs: dict[str, str]
    """Role (source, audio, video, pose_video, background) -> file name in inputs/."""
    created: float
    """Unix time the job was accepted."""
    started: float | None = None
    """Unix time of the latest start."""
    finished: float | None = None
    """Unix time it reached a final state."""
    attempts: int = 0
    """How many times a worker started it."""
    error: str | None = None
    """Why it failed (the message meant for users), or how it was cancelled."""
    note: str | None = None
    """What happened besides (e.g. re-run after a server restart)."""
    frames: int | None = None
    """Frames written (done jobs)."""
    seconds: float | None = None
    """Wall time of the last run in the worker (done jobs)."""
    origin: str = "api"
    """Who submitted it: api or page."""
    pid: int | None = None
    """Process id of the worker of the latest start (diagnostics; the worker dies with the server)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class JobStore:
    """Jobs on disk, a FIFO queue, and `config.workers` worker slots (call `start()`, then `stop()`)."""

    def __init__(self, config: JobStoreConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: list[str] = []
        self._cancel: set[str] = set()
        self._procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the folder, recover jobs left by a previous server, start the worker slots."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".slots").mkdir(exist_ok=True)
        self._recover()
        for i in range(max(1, self.config.workers)):
            t = threading.Thread(target=self._slot_loop, args=(i,), name=f"real3d-slot-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the slots; running jobs are killed and put back in the queue (their attempt not counted)."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
            procs = list(self._procs.values())
        for p in procs:
            _kill(p)
        for t in self._threads:
            t.join(timeout)

    def _recover(self) -> None:
        requeued: list[Job] = []
        for d in sorted(self.root.iterdir()):
            if not (d.is_dir() and JOB_ID.match(d.name)):
                continue
            raw = _read_json(d / "job.json")
            if raw is None:  # an upload that never became a job (or a job.json that was never written)
                shutil.rmtree(d, ignore_errors=True)
                continue
            job = Job.from_dict(raw)
            if job.state == "running":
                result = _read_json(d / "result.json")
                if result and result.get("state") == "done" and (d / "output.mp4").is_file():
                    self._finish(job, result)  # finished just before the restart
                elif job.attempts >= self.config.max_attempts:
                    job.state, job.finished = "failed", time.time()
                    job.error = f"{RESTART_REASON} (after {job.attempts} attempts); submit it again"
                    self._clean_attempt(d)
                else:
                    job.state = "queued"
                    job.note = f"re-run: attempt {job.attempts} was {RESTART_REASON}"
                    self._clean_attempt(d)
                self._save(job)
            self._jobs[job.id] = job
            if job.state == "queued":
                requeued.append(job)
        self._queue = [j.id for j in sorted(requeued, key=lambda j: j.created)]
        if self._queue:
            log.info("re-queued %d job(s) found in %s", len(self._queue), self.root)

    # ------------------------------------------------------------------ submitting
    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise JobNotFound(f"no job {job_id!r}")
        return self.root / job_id

    def new_upload(self) -> tuple[str, Path]:
        """A fresh job id and its empty inputs/ folder (no job exists until `submit`)."""
        self.check_capacity()
        job_id = uuid.uuid4().hex
        inputs = self.root / job_id / "inputs"
        inputs.mkdir(parents=True)
        return job_id, inputs

    def discard(self, job_id: str) -> None:
        """Remove an upload that did not become a job."""
        with self._lock:
            if job_id in self._jobs:
                return
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def queued_count(self) -> int:
        with self._lock:
            return len(self._queue)

    def check_capacity(self) -> None:
        if self.queued_count() >= self.config.max_queued:
            raise QueueFull(f"the queue is full ({self.config.max_queued} jobs waiting); retry in a few minutes")

    def submit(self, job_id: str, options: dict[str, Any], inputs: dict[str, str], origin: str = "api") -> Job:
        """Turn the upload `job_id` into a queued job (QueueFull when the queue is full)."""
        d = self.job_dir(job_id)
        for name in inputs.values():
            if not (d / "inputs" / name).is_file():
                raise InputError(f"input {name} is missing from the upload")
        with self._wake:
            self.check_capacity()
            job = Job(
                id=job_id,
                state="queued",
                options=dict(options),
                inputs=dict(inputs),
                created=time.time(),
                origin=origin,
            )
            self._save(job)
            self._jobs[job_id] = job
            self._queue.append(job_id)
            self._wake.notify()
        return job

    # ------------------------------------------------------------------ reading
    def get(self, job_id: str) -> Job:
        self.job_dir(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}; it may have been deleted")
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def status(self, job_id: str) -> dict[str, Any]:
        """job.json's fields plus stage, progress, queue position and whether a preview/video is there."""
        job = self.get(job_id)
        d = self.job_dir(job_id)
        out = asdict(job)
        out.pop("inputs")
        out.update(stage=None, stage_done=0, stage_total=0, progress=0.0, queue_position=None, previews=0)
        if job.state == "queued":
            with self._lock:
                out["queue_position"] = self._queue.index(job_id) if job_id in self._queue else None
        elif job.state == "running":
            st = _read_json(d / "status.json") or {}
            for k in ("stage", "stage_done", "stage_total", "progress", "previews"):
                if k in st:
                    out[k] = st[k]
        elif job.state == "done":
            res = _read_json(d / "result.json") or {}
            out.update(stage="done", progress=1.0, previews=res.get("previews", 0))
        out["has_preview"] = (d / "preview.jpg").is_file()
        out["has_video"] = job.state == "done" and (d / "output.mp4").is_file()
        return out

    def output_path(self, job_id: str) -> Path | None:
        """The finished video, or None while the job is not done (nothing half-written is ever returned)."""
        job = self.get(job_id)
        p = self.job_dir(job_id) / "output.mp4"
        return p if job.state == "done" and p.is_file() else None

    def preview_path(self, job_id: str) -> Path | None:
        self.get(job_id)
        p = self.job_dir(job_id) / "preview.jpg"
        return p if p.is_file() else None

    # ------------------------------------------------------------------ cancel / remove
    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (a final job is returned unchanged)."""
        with self._wake:
            job = self.get(job_id)
            if job.state == "queued":
                if job_id in self._queue:
                    self._queue.remove(job_id)
                job.state, job.finished, job.error = "cancelled", time.time(), "cancelled on request"
                self._save(job)
            elif job.state == "running":
                self._cancel.add(job_id)
                proc = self._procs.get(job_id)
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            return job

    def remove(self, job_id: str) -> None:
        """Delete a finished job and its files (a queued/running one is cancelled first)."""
        job = self.cancel(job_id)
        deadline = time.monotonic() + self.config.cancel_grace_s + 5
        while job.state not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            self._jobs.pop(job_id, None)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is in a final state (or `timeout` seconds passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in FINAL_STATES or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(0.05)

    # ------------------------------------------------------------------ workers
    def _save(self, job: Job) -> None:
        write_json(self.root / job.id / "job.json", asdict(job))

    def _clean_attempt(self, d: Path) -> None:
        """Remove what an attempt left: progress, preview, result, a stray output or the writer's temp file."""
        for name in ("status.json", "preview.jpg", "result.json", "output.mp4"):
            (d / name).unlink(missing_ok=True)
        for tmp in d.glob(".output.*"):
            tmp.unlink(missing_ok=True)

    def _spawn(self, slot: int) -> subprocess.Popen:
        cmd = [
            sys.executable,
            "-m",
            "real3d.serve.worker",
            "--settings",
            json.dumps(self.config.settings),
            "--parent",
            str(os.getpid()),
            "--ready-file",
            str(self.root / ".slots" / f"slot-{slot}.ready"),
        ]
        (self.root / ".slots" / f"slot-{slot}.ready").unlink(missing_ok=True)
        slot_log = open(self.root / ".slots" / f"slot-{slot}.log", "ab")  # noqa: SIM115 (inherited by the child)
        try:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=slot_log,
                start_new_session=True,
                env=_worker_env(),
            )
        finally:
            slot_log.close()

    def ready_workers(self) -> int:
        """Idle workers that have finished importing and wait for a job (a job handed to one starts at once)."""
        ready = 0
        for f in (self.root / ".slots").glob("slot-*.ready"):
            try:
                pid = int(f.read_text())
            except (OSError, ValueError):
                continue
            with self._lock:
                busy = any(p.pid == pid for p in self._procs.values())
            if not busy and _pid_alive(pid):
                ready += 1
        return ready

    def _next(self) -> Job | None:
        with self._wake:
            while not self._queue and not self._stopping.is_set():
                self._wake.wait(1.0)
            if self._stopping.is_set():
                return None
            job = self._jobs[self._queue.pop(0)]
            job.state, job.started, job.attempts, job.error = "running", time.time(), job.attempts + 1, None
            self._save(job)
            return job

    def _slot_loop(self, slot: int) -> None:
        proc: subprocess.Popen | None = None
        while not self._stopping.is_set():
            if self.config.warm and (proc is None or proc.poll() is not None):
                proc = self._spawn(slot)
            job = self._next()
            if job is None:
                break
            try:
                if proc is None or proc.poll() is not None:
                    proc = self._spawn(slot)
                self._run(job, proc)
            except Exception as e:  # never lose a slot: fail the job with the reason
                log.exception("slot %d: job %s", slot, job.id)
                self._fail(job, f"internal error while running the job ({type(e).__name__}: {e})")
            proc = None
        if proc is not None:
            _kill(proc)

    def _run(self, job: Job, proc: subprocess.Popen) -> None:
        d = self.root / job.id
        self._clean_attempt(d)
        with self._lock:
            self._procs[job.id] = proc
            job.pid = proc.pid
            self._save(job)
        try:
            try:
                proc.stdin.write(f"{d}\n".encode())
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass  # it died while warming; the exit code below tells
            cancelled_at = None
            while proc.poll() is None:
                if self._stopping.is_set():
                    _kill(proc)
                    return self._requeue_on_shutdown(job)
                if job.id in self._cancel and cancelled_at is None:
                    cancelled_at = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                if cancelled_at is not None and time.monotonic() - cancelled_at > self.config.cancel_grace_s:
                    _kill(proc)
                time.sleep(0.05)
        finally:
            with self._lock:
                self._procs.pop(job.id, None)
        if self._stopping.is_set() and job.id not in self._cancel and not (d / "result.json").is_file():
            return self._requeue_on_shutdown(job)
        result = _read_json(d / "result.json")
        with self._lock:
            cancelled = job.id in self._cancel
            self._cancel.discard(job.id)
        if cancelled or (result and result.get("state") == "cancelled"):
            self._clean_attempt(d)
            job.state, job.finished, job.error = "cancelled", time.time(), "cancelled on request"
            with self._lock:
                self._save(job)
        elif result is None:  # the worker died (a native crash, the OOM killer): drop what it left half-written
            self._clean_attempt(d)
            tail = _tail(d / "worker.log")
            self._fail(
                job,
                f"the worker process ended unexpectedly (exit code {proc.returncode})" + (f": {tail}" if tail else ""),
            )
        else:
            self._finish(job, result)

    def _finish(self, job: Job, result: dict[str, Any]) -> None:
        d = self.root / job.id
        with self._lock:
            if result.get("state") == "done" and (d / "output.mp4").is_file():
                job.state, job.frames, job.seconds = "done", result.get("frames"), result.get("seconds")
            else:
                job.state = "failed"
                job.error = result.get("error") or "the run ended without a video"
            job.finished = time.time()
            self._save(job)

    def _fail(self, job: Job, message: str) -> None:
        with self._lock:
            job.state, job.finished, job.error = "failed", time.time(), message
            self._save(job)

    def _requeue_on_shutdown(self, job: Job) -> None:
        with self._lock:
            job.state, job.attempts = "queued", max(0, job.attempts - 1)
            job.note = "put back in the queue by a server shutdown"
            self._clean_attempt(self.root / job.id)
            self._save(job)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie (ended, not yet reaped) is not a worker
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not end after SIGKILL", proc.pid)


def _tail(path: Path, n: int = 300) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][-n:] if lines else ""


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
