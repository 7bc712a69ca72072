"""The web page in headless Chromium (Debian's /usr/bin/chromium driven by playwright), and gradio_client.

Set REAL3D_UPDATE_SCREENSHOTS=1 to refresh the README's screenshot (docs/images/web_app.png) from this test."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
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
"""No GPU, no sandbox (root in CI), and no lookups of any other host: Chromium would call Google on its own."""
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "web_app.png"


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, media, tools):
    """`real3d serve` with the page, stopped at the end by its PID (SIGTERM) and expected to exit cleanly."""
    server = tools.start_server(tmp_path_factory.mktemp("page") / "jobs")
    yield server
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.log.read_text()[-2000:]


@pytest.fixture
def browser_page(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        ctx.set_default_timeout(60_000)
        try:
            yield ctx.new_page()
        finally:
            ctx.close()


def _upload(page, elem_id: str, path: Path) -> None:
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def test_browser_end_to_end(page_server, browser_page, media, tools, tmp_path):
    page, url = browser_page, page_server.url
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url + "/")
    page.wait_for_selector("#run")
    _upload(page, "source", media / "astronaut.png")
    page.wait_for_selector("#framed img")  # the framed 512x512 source
    assert "One face found" in page.locator("#faces-text").inner_text()
    _upload(page, "audio", media / "sentence.wav")  # ~100 frames: the render stage lasts many progress updates
    page.wait_for_selector("#audio .file-preview, #audio table, #audio a", state="attached")
    page.click("#run")
    page.wait_for_selector("#progress-text[data-stage='render']", timeout=120_000)  # progress per stage
    page.wait_for_selector("#preview img", timeout=120_000)  # a live preview frame
    assert page.locator("#preview img").get_attribute("src")
    video = page.wait_for_selector("#result video", timeout=300_000)
    assert page.locator("#progress-text").get_attribute("data-state") == "done"
    src = video.get_attribute("src")
    assert src.startswith(url)
    data = httpx.get(src, timeout=30).content
    frames, has_audio = tools.video_frames(data)
    assert frames >= 75 and has_audio  # ~4 s of speech at 25 fps, with its sound
    shot = tmp_path / "web_app.png"
    page.screenshot(path=str(shot))
    if os.environ.get("REAL3D_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    # a text file as the photo: the pipeline's message, as a toast
    page.goto(url + "/")
    page.wait_for_selector("#run")
    _upload(page, "source", media / "notes.txt")
    toast = page.locator("[data-testid='toast-text']").first
    toast.wait_for(state="visible")
    page.wait_for_function(
        "e => getComputedStyle(e.closest('[data-testid=\"toast-body\"]') || e).opacity === '1'",
        arg=toast.element_handle(),
    )
    assert "the portrait photo (notes.txt) is not an image; use a JPEG, PNG or WebP photo" in toast.inner_text()
    page.screenshot(path=str(tmp_path / "error.png"))

    outside = [u for u in requests if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert not outside, f"the page requested other hosts: {outside[:5]}"
    assert httpx.get(f"{url}/v1/health").status_code == 200


def test_stop_cancels_cleanly(page_server, browser_page, media):
    page, url = browser_page, page_server.url
    page.goto(url + "/")
    page.wait_for_selector("#run")
    _upload(page, "source", media / "astronaut.png")
    _upload(page, "audio", media / "minute.wav")  # long enough that the job cannot finish before Stop lands
    page.wait_for_selector("#framed img")
    page.click("#run")
    page.wait_for_selector("#progress-text[data-stage='render']", timeout=120_000)
    page.click("#stop")
    page.wait_for_selector("#progress-text[data-state='cancelled']")
    time.sleep(1.0)  # "Stopped" is the run's last update: nothing still in flight overwrites it
    assert page.locator("#progress-text").get_attribute("data-state") == "cancelled"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = [j for j in httpx.get(f"{url}/v1/jobs").json()["jobs"] if j["origin"] == "page"]
        if jobs and jobs[-1]["state"] == "cancelled":
            break
        time.sleep(0.2)
    last = jobs[-1]
    assert last["state"] == "cancelled" and not last["has_video"]
    assert not list((page_server.jobs / last["id"]).glob("*.mp4"))  # nothing half-written left
    assert page.locator("#result video").count() == 0


def test_gradio_client(page_server, media, tools):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gradio_client import Client, handle_file

    client = Client(page_server.url + "/", verbose=False, download_files=tempfile.mkdtemp(), analytics_enabled=False)
    progress, _preview, video = client.predict(  # gr.State outputs are not part of the API
        handle_file(str(media / "astronaut.png")),
        handle_file(str(media / "hello.wav")),
        None,
        None,
        None,
        "mesh",
        0.45,
        "natural",
        False,
        "auto",
        0,
        0.2,
        0,
        True,
        0.4,
        api_name="/animate",
    )
    path = video["video"] if isinstance(video, dict) else video
    assert tools.video_frames(Path(path).read_bytes()) == (10, True)
    assert "data-state='done'" in progress
    last = httpx.get(f"{page_server.url}/v1/jobs").json()["jobs"][-1]
    assert last["origin"] == "page" and last["options"]["max_seconds"] == 0.4 and last["state"] == "done"


def test_framed_preview_numbers_the_faces(media, tmp_path):
    import gradio as gr
    import numpy as np
    from PIL import Image

    from real3d.serve.page import framed_preview

    photo = np.asarray(Image.open(media / "astronaut.png"))
    two = tmp_path / "two people.png"
    Image.fromarray(np.concatenate([photo, photo[:, ::-1]], axis=1)).save(two)
    framed, faces, text = framed_preview(str(two), 1, "auto")
    assert framed.shape == (512, 512, 3) and framed.dtype == np.uint8
    assert text.startswith("2 faces found; animating face **1**")
    assert faces.visible and faces.value is not None
    framed0, _, _ = framed_preview(str(two), 0, "auto")
    assert np.abs(framed0.astype(int) - framed.astype(int)).mean() > 1  # another face, another crop
    with pytest.raises(gr.Error, match="has 2 face"):
        framed_preview(str(two), 2, "auto")
    with pytest.raises(gr.Error, match=r"the portrait photo \(notes.txt\) is not an image"):
        framed_preview(str(media / "notes.txt"), 0, "auto")
