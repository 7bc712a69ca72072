"""Keep MediaPipe/TFLite's native log lines (written straight to file descriptor 2 by C++ threads,
unaffected by Python logging) out of the CLI's stderr, while passing everything else through."""

from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager

NOISE = re.compile(rb"^(?:[WI]0000 \d\d:\d\d:\d\d|INFO: Created TensorFlow Lite|WARNING: All log messages before absl)")


@contextmanager
def filtered_stderr():
    """Route fd 2 through a filter for the duration of the block (CLI use only)."""
    try:
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except OSError:
        yield
        return
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        pending = b""
        while True:
            try:
                data = os.read(read_fd, 65536)
            except OSError:
                break
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
            if pending and b"\r" in pending:  # progress bars redraw with \r: pass them on at once
                out += pending
                pending = b""
            if out:
                os.write(saved, out)
        if pending and not NOISE.match(pending):
            os.write(saved, pending)

    t = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    t.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump drains and stops
        t.join(timeout=2.0)
        os.close(saved)
        os.close(read_fd)
