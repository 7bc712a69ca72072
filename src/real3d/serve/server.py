"""`real3d serve`: one FastAPI app with the REST API at `/v1` and the Gradio page at `/`, behind a token gate.

Binds to 127.0.0.1 by default. Any other address needs an access token (`--token` or `$REAL3D_TOKEN`),
checked on every request: `Authorization: Bearer TOKEN` (API, gradio_client), or a cookie that the page
sets after being opened once as `/?token=TOKEN`. No share links, no analytics, nothing loaded from another
host: the page works offline."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from real3d.assets import NeuralAssets
from real3d.errors import InputError, Real3DError
from real3d.serve.api import ApiLimits, make_router
from real3d.serve.jobs import JobStore, JobStoreConfig
from real3d.serve.page import PAGE_CSS, build_page, page_theme

log = logging.getLogger(__name__)

COOKIE = "real3d_token"
"""Cookie that carries the access token for the page (HttpOnly, SameSite=Strict)."""
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass
class ServeConfig:
    """Everything `real3d serve` is told."""

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback requires `token`."""
    port: int = 7860
    """TCP port."""
    token: str | None = None
    """Access token (else $REAL3D_TOKEN); required on a non-loopback bind, checked whenever set."""
    jobs: Path = field(default_factory=lambda: Path("real3d-jobs"))
    """Jobs folder: uploads, status and results of every job; survives restarts."""
    workers: int = 1
    """Jobs rendered at once (a process each)."""
    max_queued: int = 100
    """Jobs that may wait; more get 429."""
    max_upload_mb: float = 50.0
    """Largest upload per file (MB)."""
    max_media_minutes: float = 10.0
    """Longest audio or driving video (minutes)."""
    max_attempts: int = 2
    """Starts a job gets when server restarts interrupt it, before it is failed with that reason."""
    page: bool = True
    """Mount the Gradio page at `/` (the API alone otherwise)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Neural asset folders (checkpoints, bfm, hubert, segmenter_model) and the torch device, for every job."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(config: ServeConfig) -> str | None:
    """The token in force; InputError when binding beyond loopback without one."""
    token = config.token or os.environ.get("REAL3D_TOKEN") or None
    if token is not None and len(token) < 8:
        raise InputError(
            "the access token is too short; use at least 8 characters, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    if token is None and not is_loopback(config.host):
        raise InputError(
            f"binding to {config.host} makes the server reachable from other machines; give an "
            "access token with --token or $REAL3D_TOKEN (or bind to 127.0.0.1)"
        )
    return token


class TokenGate:
    """ASGI middleware: every HTTP/websocket request must carry the token (bearer header, cookie or ?token=)."""

    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.token = token

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope, receive, send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is as good as none
            cookie = SimpleCookie()
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        if self._ok(bearer) or self._ok(from_cookie):
            return await self.app(scope, receive, send)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        if self._ok(given):
            if scope["type"] == "http" and scope.get("method") == "GET":  # set the cookie, drop the token from the URL
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
                await send(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [
                            (b"location", location.encode("latin-1")),
                            (
                                b"set-cookie",
                                f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode("latin-1"),
                            ),
                            (b"cache-control", b"no-store"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return None
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return None
        if scope["path"].startswith("/v1"):
            body = json.dumps(
                {"error": "this server needs its access token: send the header 'Authorization: Bearer TOKEN'"}
            ).encode()
            ctype = b"application/json"
        else:
            body = (
                b"<!doctype html><meta charset=utf-8><title>real3d: token needed</title>"
                b"<p>This real3d server needs its access token: open it as <code>/?token=TOKEN</code>.</p>"
            )
            ctype = b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", ctype),
                    (b"www-authenticate", b'Bearer realm="real3d"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return None


def neural_availability(settings: dict[str, Any]) -> str | None:
    """None when the neural backend's files are configured, else the reason (what is missing)."""
    try:
        NeuralAssets.locate(
            settings.get("checkpoints"), settings.get("bfm"), None, settings.get("segmenter_model"), need_hubert=False
        )
    except Real3DError as e:
        return str(e)
    return None


def build_app(config: ServeConfig, store: JobStore, token: str | None):
    """The ASGI app: FastAPI with `/v1` and (if `config.page`) the Gradio page at `/`, wrapped in the token gate."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fastapi import FastAPI

    limits = ApiLimits(max_upload_mb=config.max_upload_mb, max_media_minutes=config.max_media_minutes)
    neural_reason = neural_availability(config.settings)
    backends = {"mesh": None, "neural": neural_reason}
    app = FastAPI(
        title="real3d API",
        version="1",
        description="Talking-portrait jobs: upload a photo and speech or a driving video, poll, download.",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.include_router(make_router(store, limits, lambda: backends))
    if config.page:
        import gradio as gr

        blocks, allowed = build_page(store, limits, backends, config.jobs)
        app = gr.mount_gradio_app(
            app,
            blocks,
            path="/",
            footer_links=[],
            allowed_paths=allowed,
            max_file_size=limits.max_upload_bytes,
            theme=page_theme(),
            css=PAGE_CSS,
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
        )
    return TokenGate(app, token)


def serve(config: ServeConfig) -> int:
    """Run the server until interrupted (SIGINT/SIGTERM); jobs cut by the stop are re-queued for the next start."""
    import uvicorn

    token = resolve_token(config)
    store = JobStore(
        JobStoreConfig(
            root=config.jobs,
            workers=config.workers,
            max_queued=config.max_queued,
            max_attempts=config.max_attempts,
            settings=config.settings,
        )
    )
    store.start()
    try:
        app = build_app(config, store, token)
        t0 = time.perf_counter()
        server = uvicorn.Server(
            uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=3)
        )
        host = f"[{config.host}]" if ":" in config.host else config.host
        print(
            f"real3d serve: http://{host}:{config.port}/  (API: /v1, docs: /v1/docs; jobs in {config.jobs}; "
            f"{config.workers} worker(s); pid {os.getpid()})",
            flush=True,
        )
        log.info("app built in %.2f s", time.perf_counter() - t0)
        if threading.current_thread() is threading.main_thread():
            # uvicorn shuts down gracefully on SIGTERM, then re-raises it: end with exit code 0 and stop the store
            signal.signal(signal.SIGTERM, _exit_cleanly)
        server.run()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        store.stop()
    return 0


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)
