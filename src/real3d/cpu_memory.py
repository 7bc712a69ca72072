"""Process-wide CPU allocator setting for the neural networks' large temporary tensors.

A frame of the released networks allocates and frees hundreds of tensors of 1-70 MB. With glibc's
defaults every block above the (dynamic) mmap threshold is a fresh `mmap` whose pages fault in on first
touch, and freed heap tops are trimmed back to the kernel, so much of each frame is spent in page faults
(the figure is in the README's performance table). `keep_freed_memory`
asks glibc to serve such blocks from its heap and keep freed memory for reuse instead; the peak resident
memory is what the frame needs either way, but it is no longer returned to the system between frames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc `mallopt` parameter numbers (malloc.h)."""

_applied: int | None = None


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds to `threshold_bytes` for this process (idempotent).

    Returns True when the setting is in effect, False where it does not apply (not Linux/glibc, e.g.
    macOS, Windows or musl) or glibc refused it; nothing else changes then."""
    global _applied
    if _applied is not None and _applied >= threshold_bytes:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    value = min(threshold_bytes, 2**31 - 1)
    if mallopt(M_MMAP_THRESHOLD, value) != 1 or mallopt(M_TRIM_THRESHOLD, value) != 1:
        log.debug("glibc refused mallopt thresholds of %d bytes", value)
        return False
    _applied = value
    return True
