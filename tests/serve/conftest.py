"""Fixtures of the serve tests: test media, and `real3d serve` started as a subprocess on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    """astronaut.png, hello.wav (~1 s of espeak-ng speech), sentence.wav (~4 s of speech), long.wav (5 s tone),
    minute.wav (60 s tone), notes.txt, big.bin (1.5 MB)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("serve_media")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    subprocess.run([espeak, "-v", "en-us", "-s", "170", "-w", str(d / "hello.wav"), "Hello there."], check=True)
    sentence = "Hello there. I am a talking portrait, and my lips follow this sentence."
    subprocess.run([espeak, "-v", "en-us", "-s", "170", "-w", str(d / "sentence.wav"), sentence], check=True)
    for name, seconds in (("long.wav", 5), ("minute.wav", 60)):
        t = np.arange(16000 * seconds) / 16000
        with wave.open(str(d / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16).tobytes())
    (d / "notes.txt").write_text("this is not a photo\n")
    (d / "big.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 1_500_000, dtype=np.uint8).tobytes())
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `real3d serve` subprocess."""

    proc: subprocess.Popen
    url: str
    jobs: Path
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def server_env() -> dict[str, str]:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("REAL3D_TOKEN", None)
    return env


def start_server(
    jobs: Path, *args: str, host: str = "127.0.0.1", token: str | None = None, wait: bool = True, timeout: float = 120.0
) -> Server:
    """Start `real3d serve` on a free port with `jobs` as its folder and wait for /v1/health."""
    import httpx

    port = free_port()
    log = jobs.parent / f"{jobs.name}-server-{port}.log"
    cmd = [sys.executable, "-m", "real3d.cli", "serve", "--host", host, "--port", str(port), "--jobs", str(jobs), *args]
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=server_env(), cwd=jobs.parent)
    url = f"http://127.0.0.1:{port}"
    server = Server(proc, url, jobs, log)
    if not wait:
        return server
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/health", headers=headers, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"server did not answer within {timeout} s: {log.read_text()[-2000:]}")


def submit(url: str, media: Path, options: dict | None = None, files: dict | None = None, headers=None):
    """POST /v1/jobs with the astronaut and hello.wav (or `files`: field -> (name, bytes, type))."""
    import json

    import httpx

    if files is None:
        files = {
            "source": ("astronaut.png", (media / "astronaut.png").read_bytes(), "image/png"),
            "audio": ("hello.wav", (media / "hello.wav").read_bytes(), "audio/wav"),
        }
    data = {"options": json.dumps(options)} if options is not None else {}
    return httpx.post(f"{url}/v1/jobs", files=files, data=data, headers=headers or {}, timeout=60)


def wait_final(url: str, job_ids, timeout: float = 240.0, headers=None) -> dict[str, dict]:
    """Poll until every job is done, failed or cancelled; returns id -> status."""
    import httpx

    out: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        for jid in sorted(pending):
            st = httpx.get(f"{url}/v1/jobs/{jid}", headers=headers or {}, timeout=10).json()
            if st["state"] in ("done", "failed", "cancelled"):
                out[jid] = st
                pending.discard(jid)
        time.sleep(0.3)
    assert not pending, f"jobs not finished after {timeout} s: {pending}"
    return out


def video_frames(path_or_bytes) -> tuple[int, bool]:
    """(decoded video frames, has an audio stream) of an MP4 given as a path or bytes."""
    import io

    import av

    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with av.open(src) as c:
        has_audio = bool(c.streams.audio)
        return sum(1 for _ in c.decode(video=0)), has_audio


@pytest.fixture(scope="session")
def tools():
    """The helpers above for the test modules (pytest's importlib mode does not let them import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        free_port=free_port,
        server_env=server_env,
        start_server=start_server,
        submit=submit,
        wait_final=wait_final,
        video_frames=video_frames,
        Server=Server,
    )
