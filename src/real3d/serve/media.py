"""What an uploaded file is, judged by its content (never by the client's file name), and its checks.

`place_upload` renames a freshly written upload to `<role><ext>` with the extension that its content
implies, after checking that it is what its role needs (a photo, something with a sound track, a video)
and that audio/video is not longer than the server's limit."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, UnidentifiedImageError

from real3d.errors import InputError

log = logging.getLogger(__name__)

IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
"""Pillow format -> the extension given to an accepted photo."""

CONTAINERS = {
    "mov": ".mp4",
    "mp4": ".mp4",
    "matroska": ".mkv",
    "webm": ".webm",
    "avi": ".avi",
    "gif": ".gif",
    "mpeg": ".mpg",
    "mpegts": ".ts",
    "flv": ".flv",
    "asf": ".wmv",
    "wav": ".wav",
    "mp3": ".mp3",
    "ogg": ".ogg",
    "flac": ".flac",
    "aac": ".aac",
    "aiff": ".aiff",
    "caf": ".caf",
    "w64": ".w64",
}
"""First name of FFmpeg's demuxer -> the extension given to an accepted audio/video file."""

ROLE_NAMES = {
    "source": "the portrait photo",
    "audio": "the speech audio",
    "video": "the driving video",
    "pose_video": "the pose video",
    "background": "the background image",
}
"""How messages name each input."""


class NotMedia(InputError):
    """An upload is not the kind of file its role needs (HTTP 415)."""


class MediaTooLong(InputError):
    """An audio/video upload is longer than the server accepts (HTTP 422)."""


@dataclass(frozen=True)
class MediaInfo:
    """What an upload turned out to be."""

    path: Path
    """Where it now lies (`<role><ext>`)."""
    kind: str
    """'image', 'audio' or 'video'."""
    seconds: float | None
    """Duration of audio/video (None for images or when the container does not say)."""


def _label(role: str, filename: str | None) -> str:
    name = ROLE_NAMES.get(role, role)
    return f"{name} ({filename})" if filename else name


def _sniff_image(path: Path) -> str | None:
    """Pillow's format of `path` if it is a readable image of a whitelisted format, else None."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return fmt if fmt in IMAGE_FORMATS else None


def _probe_av(path: Path) -> tuple[str, bool, bool, float | None] | None:
    """(demuxer name, has video, has audio, seconds) of an audio/video file; None when FFmpeg cannot open it."""
    try:
        with av.open(str(path), mode="r") as c:
            fmt = c.format.name.split(",")[0]
            has_v = bool(c.streams.video) and not fmt.endswith("_pipe") and fmt != "image2"
            has_a = bool(c.streams.audio)
            secs = c.duration / 1_000_000 if c.duration is not None else None
            if secs is None:
                for s in list(c.streams.video) + list(c.streams.audio):
                    if s.duration is not None and s.time_base is not None:
                        secs = max(secs or 0.0, float(s.duration * s.time_base))
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return fmt, has_v, has_a, secs


def place_upload(path: Path, role: str, filename: str | None = None, max_seconds: float | None = None) -> MediaInfo:
    """Check the upload at `path` for `role` and rename it to `<role><ext>` beside it (ext from its content).

    Raises InputError (naming the input and, if given, the client's file name) for an empty file, a file
    that is not a photo (source, background), one without a sound track (audio), without video frames
    (video, pose_video), in a container we do not accept, or longer than `max_seconds`."""
    label = _label(role, filename)
    if path.stat().st_size == 0:
        raise NotMedia(f"{label} is an empty file; upload the file again")
    if role in ("source", "background"):
        fmt = _sniff_image(path)
        if fmt is None:
            raise NotMedia(f"{label} is not an image; use a JPEG, PNG or WebP photo")
        dest = path.with_name(role + IMAGE_FORMATS[fmt])
        os.replace(path, dest)
        return MediaInfo(dest, "image", None)
    probe = _probe_av(path)
    wants = (
        "a recording with a sound track (wav, mp3, m4a, flac, ogg or a video)"
        if role == "audio"
        else "a video (mp4, mov, mkv, webm, avi)"
    )
    if probe is None:
        raise NotMedia(f"{label} is not an audio or video file that can be read; upload {wants}")
    fmt, has_v, has_a, secs = probe
    if role == "audio" and not has_a:
        raise NotMedia(f"{label} has no sound track; upload {wants}")
    if role in ("video", "pose_video") and not has_v:
        raise NotMedia(f"{label} has no video frames; upload {wants}")
    if fmt not in CONTAINERS:
        raise NotMedia(f"{label} is in a format that is not accepted ({fmt}); upload {wants}")
    if max_seconds is not None and secs is not None and secs > max_seconds:
        raise MediaTooLong(
            f"{label} is {secs / 60:.1f} min long; this server accepts at most {max_seconds / 60:g} min: "
            "shorten it, or run it with the `real3d animate` command instead"
        )
    dest = path.with_name(role + CONTAINERS[fmt])
    os.replace(path, dest)
    return MediaInfo(dest, "video" if has_v else "audio", secs)


def check_roles(roles: set[str]) -> None:
    """The set of uploaded inputs makes one run: a portrait and exactly one of audio / video."""
    if "source" not in roles:
        raise InputError("no portrait photo: upload it as the file field 'source'")
    if "audio" not in roles and "video" not in roles:
        raise InputError("nothing drives the portrait: upload speech as 'audio' or a driving video as 'video'")
    if "audio" in roles and "video" in roles:
        raise InputError("upload either 'audio' or 'video', not both (use 'pose_video' for head pose from a video)")
