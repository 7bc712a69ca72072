"""Options from clients (JSON from the API, CSV/JSON cells from a batch manifest) -> `AnimateOptions` fields.

Clients name options exactly like `AnimateOptions`'s fields (plus the few `NeuralConfig` fields that are a
client's choice). Paths are never options: files arrive as uploads (API, page) or manifest columns (batch),
and the server's own settings (checkpoint folders, device) come from the server's command line."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np

from real3d.errors import InputError
from real3d.pipeline import AnimateOptions

FILE_ROLES = ("source", "audio", "video", "pose_video", "background")
"""AnimateOptions fields that name input files: uploads (API/page) or manifest columns (batch), never options."""

SERVER_FIELDS = frozenset(
    {
        "output",
        "quiet",
        "checkpoints",
        "bfm",
        "hubert",
        "segmenter_model",
        "generator_ckpt",
        "a2m_ckpt",
        "neural",
        "device",
        "invisible_watermark",
    }
)
"""AnimateOptions fields a client may not set: paths and settings of the server, and the provenance watermark."""

ANIMATE_FIELDS = frozenset(f.name for f in dataclasses.fields(AnimateOptions))

RANGES: dict[str, tuple[float | None, float | None]] = {
    "fps": (1, 120),
    "seed": (0, 2**32 - 1),
    "face_index": (0, 99),
    "mouth_amp": (0.0, 2.0),
    "max_seconds": (0.04, None),
    "crf": (0, 51),
    "temperature": (0.0, 10.0),
    "batch_size": (1, 64),
}
"""Inclusive (low, high) bounds of numeric options (None = unbounded)."""


def _names_a_file(tp: Any) -> bool:
    """True for annotations that can hold a path or an array (Path | str | None, np.ndarray, ...)."""
    return any(a is Path or a is np.ndarray or _names_a_file(a) for a in typing.get_args(tp)) or tp in (
        Path,
        np.ndarray,
    )


def _option_types() -> dict[str, Any]:
    """Every AnimateOptions field a client may set: not the server's, and nothing that can name a path (a field
    added to AnimateOptions later that takes a path stays the server's without anyone listing it)."""
    hints = typing.get_type_hints(AnimateOptions)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(AnimateOptions)
        if f.name not in SERVER_FIELDS and f.name not in FILE_ROLES and not _names_a_file(hints[f.name])
    }


OPTION_TYPES: dict[str, Any] = _option_types()
"""Option name -> its type annotation (bool, int, float, float | None, Literal[...])."""


def option_defaults() -> dict[str, Any]:
    """Every client option with its default value (what `GET /v1/options` lists)."""
    return {f.name: f.default for f in dataclasses.fields(AnimateOptions) if f.name in OPTION_TYPES}


def describe_type(tp: Any) -> str:
    """'one of natural, periodic, none' / 'a number' / ... for messages and the docs."""
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and len(args) < len(typing.get_args(tp)):
        return describe_type(args[0]) + " or null"
    return {bool: "true or false", int: "a whole number", float: "a number"}.get(tp, str(tp))


def _convert(name: str, tp: Any, value: Any, from_text: bool) -> Any:
    """Check (and, for CSV text, parse) one value against its annotation."""
    bad = InputError(f"option {name!r} must be {describe_type(tp)}, not {value!r}")
    if typing.get_origin(tp) is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    args = typing.get_args(tp)
    if type(None) in args:
        if value is None or (from_text and str(value).strip().lower() in ("", "none", "null")):
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return str(value).strip().lower() in ("true", "1", "yes")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if from_text:
            try:
                return int(str(value).strip())
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if from_text:
            try:
                return float(str(value).strip())
            except ValueError:
                raise bad from None
        raise bad
    raise bad


def parse_options(raw: dict[str, Any] | str | None, from_text: bool = False) -> dict[str, Any]:
    """Validate client options: a dict (or its JSON text) naming AnimateOptions fields -> a clean dict.

    `from_text` accepts strings for numbers and booleans (CSV cells). Raises InputError naming an unknown
    option (with the valid names), a value of the wrong type, or one out of range."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as e:
            raise InputError(f'options are not valid JSON ({e}); send an object like {{"seed": 1}}') from None
    if not isinstance(raw, dict):
        raise InputError(f'options must be a JSON object like {{"seed": 1}}, not {type(raw).__name__}')
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in FILE_ROLES:
            raise InputError(f"{name!r} is a file, not an option: upload it as the form field {name!r}")
        if name not in OPTION_TYPES:
            raise InputError(f"unknown option {name!r}; valid options: {', '.join(sorted(OPTION_TYPES))}")
        if from_text and isinstance(value, str) and value.strip() == "":
            continue
        v = _convert(name, OPTION_TYPES[name], value, from_text)
        lo, hi = RANGES.get(name, (None, None))
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise InputError(f"option {name!r} = {v} is out of range; use a value {span}")
        out[name] = v
    return out


def build_animate_options(
    options: dict[str, Any], files: dict[str, Any], output: Any, server: dict[str, Any] | None = None
) -> AnimateOptions:
    """AnimateOptions from validated client `options`, input `files` (role -> path) and the server's settings
    (`checkpoints`, `bfm`, `hubert`, `segmenter_model`, `device`)."""
    kw = {k: v for k, v in options.items() if k in OPTION_TYPES}
    kw.update({k: v for k, v in files.items() if k in FILE_ROLES})
    kw.update({k: v for k, v in (server or {}).items() if v is not None and k in ANIMATE_FIELDS})
    return AnimateOptions(output=output, quiet=True, **kw)
