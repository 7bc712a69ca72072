"""`real3d serve` on the command line: the arguments here, the server itself in `real3d.serve.server`."""

from __future__ import annotations

import argparse
from pathlib import Path

from real3d.assets import add_asset_arguments
from real3d.errors import InputError
from real3d.serve.server import ServeConfig, serve


def add_parser(subparsers) -> None:
    """Register `real3d serve`."""
    p = subparsers.add_parser(
        "serve",
        help="web page + REST API (upload, tune, watch it render, download)",
        description="Serve the web page at / and the REST API at /v1 (docs at /v1/docs). Binds to 127.0.0.1; "
        "any other --host needs --token or $REAL3D_TOKEN.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--token", default=None, help="access token (default $REAL3D_TOKEN); required beyond loopback")
    p.add_argument("--jobs", default="real3d-jobs", help="jobs folder (default ./real3d-jobs); kept across restarts")
    p.add_argument("--workers", type=int, default=1, help="jobs rendered at once, one process each (default 1)")
    p.add_argument("--max-queued", type=int, default=100, help="jobs that may wait; more get HTTP 429 (default 100)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload per file in MB (default 50)")
    p.add_argument("--max-media-minutes", type=float, default=10.0, help="longest audio/video in minutes (default 10)")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=2,
        help="starts a job gets when restarts interrupt it, before it fails with that reason (default 2)",
    )
    p.add_argument("--no-page", action="store_true", help="serve the REST API only")
    n = p.add_argument_group("neural backend (offered on the page and the API when these are configured)")
    add_asset_arguments(n, device_default=None)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.workers < 1 or args.max_queued < 1 or args.max_upload_mb <= 0 or args.max_media_minutes <= 0:
        raise InputError("--workers and --max-queued must be at least 1, the limits above 0")
    settings = {
        k: getattr(args, k) for k in ("checkpoints", "bfm", "hubert", "segmenter_model", "device") if getattr(args, k)
    }
    return serve(
        ServeConfig(
            host=args.host,
            port=args.port,
            token=args.token,
            jobs=Path(args.jobs),
            workers=args.workers,
            max_queued=args.max_queued,
            max_upload_mb=args.max_upload_mb,
            max_media_minutes=args.max_media_minutes,
            max_attempts=args.max_attempts,
            page=not args.no_page,
            settings=settings,
        )
    )
