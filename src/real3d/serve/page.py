"""The Gradio page: a thin adapter that submits jobs to the same job store as the API and shows them render.

Upload a portrait (the framed 512x512 source is shown at once, with the faces numbered when there are
several), speech or a driving video, optional pose video and background, pick the backend and options, Run:
the page shows the stage, progress and the latest rendered frame while the job renders, Stop cancels it,
and the finished video plays with a download button. Bad input shows the pipeline's own message (gr.Error).
Page jobs share the queue, the limits and the worker processes with `/v1` jobs.

The page's own API works with gradio_client (endpoint `/animate`, see docs/serve.md)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from skimage import data

from real3d.errors import InputError, Real3DError
from real3d.face.landmarks import FaceAnalyzer
from real3d.face.portrait import analyze_portrait
from real3d.io.image import load_image
from real3d.serve.api import ApiLimits
from real3d.serve.jobs import FINAL_STATES, JobStore, QueueFull
from real3d.serve.media import check_roles, place_upload
from real3d.serve.options import parse_options

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often a running job's status is read while the page waits for it."""
EXAMPLE_TEXT = "Hello! I am a talking portrait made from a single photo, and my lips follow this speech."
PAGE_CSS = "#progress progress{width:100%;height:14px} footer{display:none !important}"
_portrait_lock = threading.Lock()  # MediaPipe graphs are not thread-safe; previews are quick, so one at a time


def page_theme() -> Any:
    """Gradio's default look with system fonts: the stock theme would load Google Fonts from the internet."""
    import gradio as gr  # gradio is imported when the page is built, not by every `real3d` command

    return gr.themes.Default(
        font=["system-ui", "Segoe UI", "Roboto", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )


def make_examples(folder: Path) -> list[list[str | None]]:
    """The demo's inputs, made locally: scikit-image's astronaut and espeak-ng speech (if installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = folder / "astronaut.png"
    if not photo.is_file():
        Image.fromarray(data.astronaut()).save(photo)
    speech = folder / "hello.wav"
    espeak = shutil.which("espeak-ng")
    if not speech.is_file() and espeak is not None:
        subprocess.run(
            [espeak, "-v", "en-us", "-s", "150", "-w", str(speech), EXAMPLE_TEXT], check=True, capture_output=True
        )
    return [[str(photo), str(speech) if speech.is_file() else None]]


def _path(f: Any) -> Path | None:
    """A gr.File value (a path string, or an object with .name/.path) -> Path."""
    import gradio as gr

    if f is None or f == "":
        return None
    if isinstance(f, (str, Path)):
        return Path(f)
    for attr in ("path", "name"):
        if isinstance(getattr(f, attr, None), str):
            return Path(getattr(f, attr))
    if isinstance(f, dict) and f.get("path"):
        return Path(f["path"])
    raise gr.Error("the upload could not be read; upload the file again")


def _checked_photo(path: Path, role: str) -> Path:
    """Copy an uploaded photo to a temp folder and check it like the API does (same messages)."""
    tmp = Path(tempfile.mkdtemp(prefix="real3d-page-"))
    shutil.copyfile(path, tmp / f"{role}.upload")
    return place_upload(tmp / f"{role}.upload", role, path.name).path


def framed_preview(source: Any, face_index: float | None, framing: str):
    """(framed 512x512 RGB, faces image or None, markdown) for the uploaded portrait; gr.Error on bad input."""
    import gradio as gr

    path = _path(source)
    if path is None:
        return None, gr.Image(value=None, visible=False), ""
    try:
        photo = load_image(_checked_photo(path, "source"))
        with _portrait_lock, FaceAnalyzer() as analyzer:
            faces = analyzer.detect(photo)
            portrait = analyze_portrait(photo, face_index=int(face_index or 0), framing=framing, analyzer=analyzer)
    except Real3DError as e:
        raise gr.Error(str(e).replace("the source image", f"the portrait photo ({path.name})")) from None
    chosen = int(face_index or 0)
    if len(faces) <= 1:
        return portrait.image, gr.Image(value=None, visible=False), "One face found."
    return (
        portrait.image,
        gr.Image(value=_numbered_faces(photo, faces, chosen), visible=True),
        (f"{len(faces)} faces found; animating face **{chosen}** (0 = largest). Change it with *Face* in Options."),
    )


def _numbered_faces(photo: np.ndarray, faces, chosen: int) -> np.ndarray:
    scale = min(1.0, 768 / max(photo.shape[:2]))
    img = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else photo.copy()
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = (int(round(v * scale)) for v in face.bbox)
        color = (255, 64, 64) if i == chosen else (255, 255, 255)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, 3 if i == chosen else 1)
        cv2.putText(img, str(i), (x0 + 4, y0 + 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, color, 2)
    return img


def _progress_html(stage: str | None, state: str, done: int, total: int, fraction: float, queue_pos) -> str:
    if state == "queued":
        text = "Waiting in the queue" + (f" (position {queue_pos + 1})" if queue_pos is not None else "")
    elif state == "running":
        text = {
            "source": "Analysing the portrait",
            "driver": "Reading the driver",
            "render": f"Rendering frame {done} / {total}",
            "done": "Writing the video",
        }.get(stage or "", "Starting")
    else:
        text = {"done": "Done", "failed": "Failed", "cancelled": "Stopped", "stopping": "Stopping"}.get(state, state)
    return (
        f"<div id='progress-text' data-state='{state}' data-stage='{stage or ''}'>{text} — {fraction * 100:.0f} %"
        f"</div><progress value='{fraction:.3f}' max='1'></progress>"
    )


def build_page(store: JobStore, limits: ApiLimits, backends: dict[str, str | None], jobs_root: Path):
    """The gr.Blocks page and the folders gradio may serve files from."""
    import gradio as gr

    examples_dir = Path(jobs_root) / ".examples"
    examples = make_examples(examples_dir)
    neural_reason = backends.get("neural")
    out_dir = Path(tempfile.mkdtemp(prefix="real3d-page-out-"))

    def submit(
        source,
        audio,
        video,
        pose_video,
        background,
        backend,
        mouth_amp,
        blink,
        still,
        framing,
        face_index,
        temperature,
        seed,
        visible_watermark,
        max_seconds,
    ):
        files = {
            "source": _path(source),
            "audio": _path(audio),
            "video": _path(video),
            "pose_video": _path(pose_video),
            "background": _path(background),
        }
        files = {k: v for k, v in files.items() if v is not None}
        raw = {
            "backend": backend or "mesh",
            "mouth_amp": mouth_amp,
            "blink": blink,
            "still": bool(still),
            "framing": framing,
            "face_index": int(face_index or 0),
            "seed": int(seed or 0),
            "visible_watermark": bool(visible_watermark),
            "max_seconds": float(max_seconds) if max_seconds else None,
        }
        if raw["backend"] == "neural":
            raw["temperature"] = temperature
        try:
            check_roles(set(files))
            options = parse_options(raw)
            reason = backends.get(options.get("backend", "mesh"))
            if reason:
                raise InputError(f"the {options['backend']} backend is not available on this server: {reason}")
            job_id, inputs = store.new_upload()
        except (Real3DError, QueueFull) as e:
            raise gr.Error(str(e)) from None
        try:
            names = {}
            for role, path in files.items():
                if path.stat().st_size > limits.max_upload_bytes:
                    raise InputError(f"{path.name} is larger than this server's limit of {limits.max_upload_mb:g} MB")
                shutil.copyfile(path, inputs / f"{role}.upload")
                names[role] = place_upload(
                    inputs / f"{role}.upload", role, path.name, limits.max_media_minutes * 60
                ).path.name
            return store.submit(job_id, options, names, origin="page").id
        except Real3DError as e:
            store.discard(job_id)
            raise gr.Error(str(e)) from None

    def animate(
        source,
        audio,
        video,
        pose_video,
        background,
        backend,
        mouth_amp,
        blink,
        still,
        framing,
        face_index,
        temperature,
        seed,
        visible_watermark,
        max_seconds,
    ):
        """Submit the inputs as a job and stream its progress, preview frame and finally the video."""
        job_id = submit(
            source,
            audio,
            video,
            pose_video,
            background,
            backend,
            mouth_amp,
            blink,
            still,
            framing,
            face_index,
            temperature,
            seed,
            visible_watermark,
            max_seconds,
        )
        yield job_id, _progress_html(None, "queued", 0, 0, 0.0, None), None, None
        shown_previews = -1
        try:
            while True:
                st = store.status(job_id)
                preview = gr.skip()
                if st["has_preview"] and st.get("previews", 0) != shown_previews:
                    shown_previews = st.get("previews", 0)
                    preview = _read_preview(store, job_id)
                html = _progress_html(
                    st["stage"], st["state"], st["stage_done"], st["stage_total"], st["progress"], st["queue_position"]
                )
                if st["state"] in FINAL_STATES:
                    break
                yield job_id, html, preview, gr.skip()
                time.sleep(POLL_S)
        finally:
            if store.get(job_id).state not in FINAL_STATES:  # the page was closed or Stop pressed
                store.cancel(job_id)
        if st["state"] == "failed":
            raise gr.Error(st["error"] or "the run failed")
        if st["state"] == "cancelled":
            yield job_id, html, preview, None
            return
        out = out_dir / f"real3d-{job_id[:8]}.mp4"
        shutil.copyfile(store.output_path(job_id), out)
        yield job_id, html, preview, str(out)

    def stop(job_id):
        """Cancel the job; the running `animate` sees it end and shows "Stopped" as its last update, so no
        progress update still in flight can overwrite the final state."""
        if not job_id:
            return _progress_html(None, "cancelled", 0, 0, 0.0, None)
        try:
            store.cancel(job_id)
        except Real3DError:
            pass
        return _progress_html(None, "stopping", 0, 0, 0.0, None)

    with gr.Blocks(title="real3d: talking portrait", analytics_enabled=False) as page:
        gr.Markdown(
            "## real3d — one photo + speech or a driving video → a talking-portrait video\n"
            "Runs on this machine; nothing is uploaded elsewhere. The same jobs are available through the "
            "REST API at [/v1/docs](/v1/docs)."
        )
        job_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.File(label="Portrait photo", file_count="single", type="filepath", elem_id="source")
                with gr.Row():
                    framed = gr.Image(
                        label="Framed source (512×512)",
                        interactive=False,
                        elem_id="framed",
                        height=256,
                        show_label=True,
                    )
                    faces_img = gr.Image(
                        label="Faces found", interactive=False, visible=False, elem_id="faces", height=256
                    )
                faces_md = gr.Markdown(elem_id="faces-text")
                with gr.Tab("Speech"):
                    audio = gr.File(
                        label="Speech audio (wav, mp3, m4a, flac, ogg; or a video's sound)",
                        type="filepath",
                        elem_id="audio",
                    )
                with gr.Tab("Driving video"):
                    video = gr.File(label="Driving video: expression and head pose", type="filepath", elem_id="video")
                with gr.Accordion("Pose video and background (optional)", open=False):
                    pose_video = gr.File(
                        label="Pose video: head pose from this video", type="filepath", elem_id="pose_video"
                    )
                    background = gr.File(label="Background image", type="filepath", elem_id="background")
                with gr.Accordion("Options", open=False):
                    backend = gr.Radio(
                        ["mesh", "neural"] if not neural_reason else ["mesh"],
                        value="mesh",
                        label="Backend",
                        elem_id="backend",
                    )
                    if neural_reason:
                        gr.Markdown(
                            f"*Neural backend unavailable on this server:* {neural_reason}", elem_id="neural-missing"
                        )
                    mouth_amp = gr.Slider(
                        0.0, 2.0, value=0.45, step=0.05, label="Mouth amplitude (speech)", elem_id="mouth_amp"
                    )
                    blink = gr.Radio(
                        ["natural", "periodic", "none"], value="natural", label="Blinks (speech)", elem_id="blink"
                    )
                    still = gr.Checkbox(False, label="Still head (keep the photo's head pose)", elem_id="still")
                    framing = gr.Radio(["auto", "crop", "full"], value="auto", label="Framing", elem_id="framing")
                    face_index = gr.Number(0, precision=0, minimum=0, label="Face (0 = largest)", elem_id="face_index")
                    temperature = gr.Slider(
                        0.0, 2.0, value=0.2, step=0.05, label="Temperature (neural, speech)", elem_id="temperature"
                    )
                    seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    visible_watermark = gr.Checkbox(
                        True, label="Visible 'AI-generated' label", elem_id="visible_watermark"
                    )
                    max_seconds = gr.Number(
                        None, minimum=0, label="Stop after (seconds, empty = full length)", elem_id="max_seconds"
                    )
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column(scale=1):
                progress = gr.HTML(_progress_html(None, "idle", 0, 0, 0.0, None), elem_id="progress")
                preview = gr.Image(label="Live preview", interactive=False, elem_id="preview", height=384)
                result = gr.Video(label="Result", interactive=False, elem_id="result", height=384)
        gr.Examples(examples, inputs=[source, audio], label="Example (no download needed)", elem_id="examples")

        preview_inputs = [source, face_index, framing]
        for trigger in (source.upload, face_index.change, framing.change):
            trigger(
                framed_preview,
                preview_inputs,
                [framed, faces_img, faces_md],
                api_visibility="private",
                show_progress="minimal",
            )
        inputs = [
            source,
            audio,
            video,
            pose_video,
            background,
            backend,
            mouth_amp,
            blink,
            still,
            framing,
            face_index,
            temperature,
            seed,
            visible_watermark,
            max_seconds,
        ]
        run_btn.click(
            animate,
            inputs,
            [job_state, progress, preview, result],
            api_name="animate",
            concurrency_limit=None,
            show_progress="hidden",
        )
        stop_btn.click(stop, [job_state], [progress], api_visibility="private")
    return page, [str(examples_dir), str(out_dir)]


def _read_preview(store: JobStore, job_id: str):
    import gradio as gr

    path = store.preview_path(job_id)
    if path is None:
        return gr.skip()
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError:  # replaced while being read: show it next time
        return gr.skip()
