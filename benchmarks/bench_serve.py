"""Web app and API timings on the mesh backend (a 10 s espeak-ng clip and the astronaut).

Prints:
- page: load -> Run clicked -> first live-preview frame -> finished video, in headless Debian chromium
- API vs CLI: wall time of `real3d animate` (a fresh process, as a user runs it) against POST /v1/jobs + polling
  + GET video on a server whose worker is warm, on the same input; and the per-job import cost that the warm
  worker hides (a worker started cold with --no-preload)

    .venv/bin/python benchmarks/bench_serve.py [--seconds 10] [--repeats 2]

Needs espeak-ng, and /usr/bin/chromium + playwright for the page figures (skipped without them)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TEXT = (
    "Hello! I am a talking portrait made from a single photo. My lips follow the sounds of this speech, "
    "my eyes blink, and my head moves a little, all without downloading any model weights. "
    "This recording is long enough to time a ten second clip from start to end."
)
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _env() -> dict[str, str]:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(jobs: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "real3d.cli", "serve", "--port", str(port), "--jobs", str(jobs), *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(30)


def make_inputs(d: Path) -> tuple[Path, Path]:
    from PIL import Image
    from skimage import data

    photo, speech = d / "astronaut.png", d / "speech.wav"
    Image.fromarray(data.astronaut()).save(photo)
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(speech), TEXT], check=True)
    return photo, speech


def bench_page(url: str, photo: Path, speech: Path, seconds: float) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path="/usr/bin/chromium",
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        ctx.set_default_timeout(300_000)
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_selector("#run")
        t_load = time.perf_counter() - t0
        page.locator("#source input[type=file]").set_input_files(str(photo))
        page.locator("#audio input[type=file]").set_input_files(str(speech))
        page.wait_for_selector("#framed img")
        page.click("text=Options")
        box = page.locator("#max_seconds input")
        box.fill(str(seconds))
        box.press("Tab")
        time.sleep(0.5)
        wait_ready(url)  # as on a server that has been idle a few seconds
        t_run = time.perf_counter()
        page.click("#run")
        page.wait_for_selector("#preview img")
        t_preview = time.perf_counter() - t_run
        page.wait_for_selector("#result video")
        t_video = time.perf_counter() - t_run
        ctx.close()
    return {
        "page load (s)": t_load,
        "Run -> first preview frame (s)": t_preview,
        "Run -> finished video (s)": t_video,
        "page open -> first preview (s)": t_run - t0 + t_preview,
        "  (of which uploading and framing, s)": t_run - t0 - t_load,
    }


def wait_ready(url: str, timeout: float = 300.0) -> None:
    """Wait until the server's worker has finished its imports (what an idle server has had time to do)."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/v1/health").json().get("workers_ready", 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("no worker became ready")
        time.sleep(0.2)


def run_cli(photo: Path, speech: Path, out: Path, seconds: float) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "real3d.cli",
            "animate",
            str(photo),
            "--audio",
            str(speech),
            "-o",
            str(out),
            "--max-seconds",
            str(seconds),
            "-q",
        ],
        check=True,
        env=_env(),
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def run_api(url: str, photo: Path, speech: Path, seconds: float) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = httpx.post(
        f"{url}/v1/jobs",
        files={
            "source": (photo.name, photo.read_bytes(), "image/png"),
            "audio": (speech.name, speech.read_bytes(), "audio/wav"),
        },
        data={"options": json.dumps({"max_seconds": seconds})},
        timeout=60,
    )
    r.raise_for_status()
    jid = r.json()["id"]
    while (st := httpx.get(f"{url}/v1/jobs/{jid}").json())["state"] not in ("done", "failed", "cancelled"):
        time.sleep(0.05)
    if st["state"] != "done":
        raise RuntimeError(st)
    httpx.get(f"{url}/v1/jobs/{jid}/video").raise_for_status()
    return time.perf_counter() - t0, st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per measurement (median printed)")
    args = ap.parse_args()
    from real3d.precision import machine_summary

    print(f"{machine_summary()}; load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        photo, speech = make_inputs(d)
        # CLI vs API (API-only server, warm worker)
        # CLI and API runs alternate, so that a change in the machine's load hits both alike
        proc, url = start_server(d / "jobs-api", "--no-page")
        cli, api, api_inner = [], [], []
        try:
            for i in range(args.repeats):
                cli.append(run_cli(photo, speech, d / f"cli{i}.mp4", args.seconds))
                wait_ready(url)
                secs, st = run_api(url, photo, speech, args.seconds)
                api.append(secs)
                api_inner.append(st["seconds"])  # the pipeline's own run inside the worker
                result = json.loads((d / "jobs-api" / st["id"] / "result.json").read_text())
                stages = result.get("timings", {})
        finally:
            stop(proc)
        cold = _cold_worker_job(d, photo, speech, args.seconds)
        c, a, inner = statistics.median(cli), statistics.median(api), statistics.median(api_inner)
        print(f"{args.seconds:g} s clip, mesh backend, median of {args.repeats} (CLI and API runs alternating):")
        print(f"  CLI `real3d animate` (new process)      {c:6.2f} s   runs: {', '.join(f'{x:.1f}' for x in cli)}")
        print(
            f"  API POST + poll + GET video (warm)      {a:6.2f} s   runs: {', '.join(f'{x:.1f}' for x in api)}"
            f"   -> {100 * (a - c) / c:+.1f} % vs CLI"
        )
        print(
            f"    of which the pipeline in the worker   {inner:6.2f} s   -> upload, queue, hand-off, polling and "
            f"download: {a - inner:.2f} s ({100 * (a - inner) / a:.1f} %)"
        )
        print(f"  one job on a cold worker (imports paid) {cold:6.2f} s   (what the warm worker hides)")
        before = {k: round(v, 2) for k, v in stages.items() if k in ("source_analysis", "driver_analysis")}
        print(f"  pipeline stages before the first frame (last API run): {before} s")
        if shutil.which("chromium") and Path("/usr/bin/chromium").is_file():
            proc, url = start_server(d / "jobs-page")
            try:
                for k, v in bench_page(url, photo, speech, args.seconds).items():
                    print(f"  page: {k:34s} {v:6.2f}")
            finally:
                stop(proc)
        else:
            print("  page: skipped (no /usr/bin/chromium)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def _cold_worker_job(d: Path, photo: Path, speech: Path, seconds: float) -> float:
    """Time one job through a JobStore whose worker imports the pipeline only when the job arrives."""
    sys.path.insert(0, str(REPO / "src"))
    from real3d.serve.jobs import JobStore, JobStoreConfig
    from real3d.serve.media import place_upload

    store = JobStore(JobStoreConfig(root=d / "jobs-cold-store", warm=False))
    store.start()
    try:
        t0 = time.perf_counter()
        jid, inputs = store.new_upload()
        shutil.copyfile(photo, inputs / "source.upload")
        shutil.copyfile(speech, inputs / "audio.upload")
        names = {r: place_upload(inputs / f"{r}.upload", r).path.name for r in ("source", "audio")}
        store.submit(jid, {"max_seconds": seconds}, names)
        job = store.wait(jid, timeout=600)
        assert job.state == "done", job
        return time.perf_counter() - t0
    finally:
        store.stop()


if __name__ == "__main__":
    main()
