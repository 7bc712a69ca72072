"""REST API under `/v1`: submit a job (multipart upload), poll it, fetch its video, cancel it.

    POST   /v1/jobs                 files source + (audio | video) [+ pose_video, background], field options (JSON)
                                    -> 202 {"id", "state", "urls"}
    GET    /v1/jobs                 every job's status
    GET    /v1/jobs/{id}            state, stage, progress, queue position, error
    GET    /v1/jobs/{id}/video      the finished MP4 (409 while not done)
    GET    /v1/jobs/{id}/preview    the latest rendered frame (JPEG)
    DELETE /v1/jobs/{id}            cancel a queued/running job; delete a finished one and its files
    GET    /v1/options              every option with its default, type and range; which backends are usable
    GET    /v1/health               {"ok": true, "queued": n, "workers": n}
    GET    /v1/docs, /v1/openapi.json   the API's documentation, served by this server

Errors are JSON `{"error": message}` with 400 (bad request or option), 401 (token), 404 (no such job),
409 (video not ready), 413 (file over the size limit), 415 (not multipart, or a file that is not the media
its field needs), 422 (media too long), 429 (queue full).

Uploads are parsed as they stream in (python-multipart's push parser): each file goes straight to
`<job>/inputs/<role>.upload`, its size is counted on the way and the request is refused the moment one file
passes the limit; nothing is held in memory. The client's file name is only quoted in messages."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from real3d.errors import InputError, Real3DError
from real3d.serve.jobs import FINAL_STATES, JobNotFound, JobStore, QueueFull
from real3d.serve.media import MediaTooLong, NotMedia, check_roles, place_upload
from real3d.serve.options import FILE_ROLES, OPTION_TYPES, RANGES, describe_type, option_defaults, parse_options

log = logging.getLogger(__name__)

MAX_OPTIONS_BYTES = 64 * 1024
"""Largest accepted `options` form field."""


@dataclass
class ApiLimits:
    """What one request may carry."""

    max_upload_mb: float = 50.0
    """Largest file per form field, in MB (10^6 bytes)."""
    max_media_minutes: float = 10.0
    """Longest accepted audio or video, in minutes."""

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


class Reject(Exception):
    """A request refused with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FormReceiver:
    """python-multipart callbacks that write file fields straight to disk with a per-file size limit."""

    def __init__(self, inputs: Path, max_file_bytes: int) -> None:
        self.inputs = inputs
        self.max_file_bytes = max_file_bytes
        self.files: dict[str, tuple[Path, str | None]] = {}
        self.fields: dict[str, str] = {}
        self._part = _Part()
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._fh = None
        self._size = 0
        self._buf = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._hfield,
            "on_header_value": self._hval,
            "on_header_end": self._hend,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._part = _Part()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _hval(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _hend(self) -> None:
        self._part.headers[self._hname.decode("latin-1").lower()] = self._hvalue.decode("utf-8", "replace")
        self._hname.clear()
        self._hvalue.clear()

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._part.headers.get("content-disposition", ""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self._part.name = name
        self._part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        self._size = 0
        if name in FILE_ROLES:
            if name in self.files:
                raise Reject(400, f"the file field {name!r} was sent twice; send each input once")
            path = self.inputs / f"{name}.upload"  # our name: the client's file name is never a path
            self._fh = open(path, "wb")  # noqa: SIM115 (closed in _end or close())
            self.files[name] = (path, self._part.filename)
        elif name == "options":  # a plain field, or a small JSON file
            self._buf.clear()
        else:
            valid = ", ".join((*FILE_ROLES, "options"))
            raise Reject(400, f"unknown form field {name!r}; send the fields {valid}")

    def _data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        self._size += n
        if self._fh is not None:
            if self._size > self.max_file_bytes:
                label = self._part.name + (f" ({self._part.filename})" if self._part.filename else "")
                raise Reject(
                    413,
                    f"{label} is larger than this server's limit of "
                    f"{self.max_file_bytes / 1e6:g} MB per file; send a smaller or shorter file",
                )
            self._fh.write(data[start:end])
        else:
            if self._size > MAX_OPTIONS_BYTES:
                raise Reject(413, f"the options field is larger than {MAX_OPTIONS_BYTES // 1024} KB")
            self._buf += data[start:end]

    def _end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        elif self._part.name == "options":
            self.fields["options"] = self._buf.decode("utf-8", "replace")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _error(status: int, message: str):
    return JSONResponse({"error": message}, status_code=status)


async def receive_job(request, store: JobStore, limits: ApiLimits, check_backend) -> dict[str, Any]:
    """Stream a multipart job request into a new upload folder, check it, and queue it. Raises Reject."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise Reject(
            415,
            "send the job as multipart/form-data: files source and audio (or video), "
            "and an optional field options with a JSON object",
        )
    max_total = len(FILE_ROLES) * limits.max_upload_bytes + MAX_OPTIONS_BYTES + 1_000_000
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_total:
        raise Reject(
            413,
            f"the request is {int(length) / 1e6:.0f} MB; this server accepts at most "
            f"{limits.max_upload_mb:g} MB per file",
        )
    try:
        store.check_capacity()
    except QueueFull as e:
        raise Reject(429, str(e)) from None
    job_id, inputs = store.new_upload()
    receiver = FormReceiver(inputs, limits.max_upload_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    received = 0
    try:
        failure: Reject | None = None
        async for chunk in request.stream():
            received += len(chunk)
            if failure is None:
                try:
                    parser.write(chunk)
                except Reject as e:
                    failure = e
                except Exception as e:  # python-multipart's parse errors
                    failure = Reject(
                        400, f"the multipart body cannot be parsed ({e}); send a valid multipart/form-data request"
                    )
            elif received > max_total:
                break  # stop reading a body this large; the connection is closed with the answer
        if failure is not None:
            raise failure
        parser.finalize()
        receiver.close()
        try:
            check_roles(set(receiver.files))
            options = parse_options(receiver.fields.get("options"))
            check_backend(options)
        except InputError as e:
            raise Reject(400, str(e)) from None
        except Real3DError as e:  # the neural backend is not configured on this server
            raise Reject(400, str(e)) from None
        names: dict[str, str] = {}
        for role, (path, filename) in receiver.files.items():
            try:
                info = await run_in_threadpool(place_upload, path, role, filename, limits.max_media_minutes * 60)
            except NotMedia as e:
                raise Reject(415, str(e)) from None
            except MediaTooLong as e:
                raise Reject(422, str(e)) from None
            names[role] = info.path.name
        try:
            job = store.submit(job_id, options, names, origin="api")
        except QueueFull as e:
            raise Reject(429, str(e)) from None
    except BaseException:
        receiver.close()
        store.discard(job_id)
        raise
    return {"id": job.id, "state": job.state, "urls": _urls(job.id)}


def _urls(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"status": base, "video": f"{base}/video", "preview": f"{base}/preview"}


JOB_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["source"],
                "properties": {
                    "source": {"type": "string", "format": "binary", "description": "portrait photo (JPEG/PNG/WebP)"},
                    "audio": {
                        "type": "string",
                        "format": "binary",
                        "description": "speech (wav/mp3/m4a/flac/ogg or a video)",
                    },
                    "video": {
                        "type": "string",
                        "format": "binary",
                        "description": "driving video (expression + head pose)",
                    },
                    "pose_video": {
                        "type": "string",
                        "format": "binary",
                        "description": "optional: head pose from this video",
                    },
                    "background": {"type": "string", "format": "binary", "description": "optional: background image"},
                    "options": {
                        "type": "string",
                        "description": 'JSON object of options, e.g. {"seed": 1, "still": true}; see GET /v1/options',
                    },
                },
            }
        }
    },
}


def make_router(store: JobStore, limits: ApiLimits, backends):
    """The `/v1` APIRouter. `backends()` -> {"mesh": None, "neural": None or the reason it is unavailable}."""
    router = APIRouter(prefix="/v1")

    def check_backend(options: dict[str, Any]) -> None:
        backend = options.get("backend", "mesh")
        reason = backends().get(backend)
        if reason:
            raise InputError(f"the {backend} backend is not available on this server: {reason}")

    @router.post(
        "/jobs",
        status_code=202,
        summary="Submit a job",
        openapi_extra={"requestBody": JOB_REQUEST_BODY},
        responses={400: {}, 413: {}, 415: {}, 422: {}, 429: {}},
    )
    async def create_job(request: Request):
        """Upload a portrait and a driver (speech or video) with options; the job is queued and its id returned."""
        try:
            body = await receive_job(request, store, limits, check_backend)
        except Reject as e:
            return _error(e.status, e.message)
        return JSONResponse(body, status_code=202, headers={"Location": body["urls"]["status"]})

    @router.get("/jobs", summary="List jobs")
    def list_jobs():
        """Every job's status, oldest first."""
        return {"jobs": [store.status(j.id) for j in store.jobs()]}

    @router.get("/jobs/{job_id}", summary="Job status", responses={404: {}})
    def get_job(job_id: str):
        """State (queued, running, done, failed, cancelled), stage, progress 0..1, queue position, error."""
        try:
            return store.status(job_id)
        except JobNotFound as e:
            return _error(404, str(e))

    @router.get(
        "/jobs/{job_id}/video", summary="The finished video", responses={404: {}, 409: {}}, response_class=FileResponse
    )
    def get_video(job_id: str):
        """The MP4, once the job is done (409 before; a failed job's error says why there is none)."""
        try:
            path = store.output_path(job_id)
            job = store.get(job_id)
        except JobNotFound as e:
            return _error(404, str(e))
        if path is None:
            why = f": {job.error}" if job.error else ""
            return _error(409, f"job {job_id} is {job.state}{why}; the video is served once it is done")
        return FileResponse(path, media_type="video/mp4", filename=f"real3d-{job_id}.mp4")

    @router.get(
        "/jobs/{job_id}/preview", summary="Latest rendered frame", responses={404: {}}, response_class=FileResponse
    )
    def get_preview(job_id: str):
        """The frame rendered last (JPEG), for a live preview."""
        try:
            path = store.preview_path(job_id)
        except JobNotFound as e:
            return _error(404, str(e))
        if path is None:
            return _error(404, f"job {job_id} has no rendered frame yet")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.delete("/jobs/{job_id}", summary="Cancel or delete a job", responses={404: {}})
    def delete_job(job_id: str):
        """A queued or running job is cancelled (202); a finished one is deleted with its files (200)."""
        try:
            job = store.get(job_id)
            if job.state in FINAL_STATES:
                store.remove(job_id)
                return {"id": job_id, "deleted": True}
            job = store.cancel(job_id)
        except JobNotFound as e:
            return _error(404, str(e))
        return JSONResponse(
            {"id": job_id, "state": job.state, "cancel_requested": job.state == "running"}, status_code=202
        )

    @router.get("/options", summary="Options and backends")
    def get_options():
        """Every option with its default, accepted values and range; which backends this server can run."""
        defaults = option_defaults()
        return {
            "options": {
                name: {"default": defaults.get(name), "type": describe_type(tp), "range": RANGES.get(name)}
                for name, tp in sorted(OPTION_TYPES.items())
            },
            "files": list(FILE_ROLES),
            "backends": {name: {"available": not reason, "reason": reason} for name, reason in backends().items()},
            "limits": {
                "max_upload_mb": limits.max_upload_mb,
                "max_media_minutes": limits.max_media_minutes,
                "max_queued": store.config.max_queued,
                "workers": store.config.workers,
            },
        }

    @router.get("/health", summary="Health")
    def health():
        """Queue length, worker slots, and how many workers are warm and idle (a job given to one starts at once)."""
        return {
            "ok": True,
            "queued": store.queued_count(),
            "workers": store.config.workers,
            "workers_ready": store.ready_workers(),
        }

    @router.get("/docs", include_in_schema=False)
    def docs(request: Request):
        return HTMLResponse(render_docs(request.app.openapi()))

    return router


def render_docs(spec: dict[str, Any]) -> str:
    """A self-contained HTML page of the OpenAPI spec (FastAPI's Swagger page loads scripts from a CDN)."""
    e = html.escape
    out = [
        f"<!doctype html><meta charset=utf-8><title>{e(spec.get('info', {}).get('title', 'API'))}</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "code,pre{background:#f4f4f4;padding:.1em .3em}h3{margin-top:1.6em}.m{font-weight:bold;color:#064}</style>",
        f"<h1>{e(spec.get('info', {}).get('title', 'API'))}</h1>",
        f"<p>{e(spec.get('info', {}).get('description', ''))}</p>",
        "<p>Machine-readable: <a href='/v1/openapi.json'>/v1/openapi.json</a></p>",
    ]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            out.append(
                f"<h3><span class=m>{e(method.upper())}</span> <code>{e(path)}</code> — {e(op.get('summary', ''))}</h3>"
            )
            if op.get("description"):
                out.append(f"<p>{e(op['description'])}</p>")
            body = op.get("requestBody", {}).get("content", {})
            for ctype, content in body.items():
                props = content.get("schema", {}).get("properties", {})
                if props:
                    out.append(f"<p>Body ({e(ctype)}):</p><ul>")
                    for name, prop in props.items():
                        out.append(
                            f"<li><code>{e(name)}</code>: {e(prop.get('description', prop.get('type', '')))}</li>"
                        )
                    out.append("</ul>")
            codes = ", ".join(sorted(op.get("responses", {})))
            out.append(f"<p>Responses: {e(codes)}</p>")
    return "\n".join(out)
