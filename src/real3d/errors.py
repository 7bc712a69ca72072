"""Exception types. Every message says what was wrong and what to do about it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Real3DError(Exception):
    """Base class of every error real3d raises on purpose; the CLI prints it and exits non-zero."""

    exit_code = 1


class InputError(Real3DError):
    """A user-supplied file or value is missing, unreadable, corrupt or unsupported."""

    exit_code = 2


class NoFaceError(InputError):
    """No usable face was found where one is required."""


class OutputError(Real3DError):
    """The output cannot be written (folder missing, not writable, encoder failure)."""

    exit_code = 3


class CheckpointError(Real3DError):
    """A checkpoint or weight file is missing, unsafe, or does not match the model."""

    exit_code = 4


class DependencyError(Real3DError):
    """An optional package or a user-supplied model file is needed but absent."""

    exit_code = 5


class Cancelled(Real3DError):
    """The caller asked the run to stop (a Stop button, a DELETE on a job, Ctrl-C); nothing was written."""

    exit_code = 130


def report_errors(handler: Callable[[T], int], args: T) -> int:
    """Run a command handler; a `Real3DError` is printed as `error: <message>` on stderr and becomes its exit code."""
    try:
        return handler(args)
    except Real3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return Cancelled.exit_code
