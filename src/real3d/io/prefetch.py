"""Run an iterator one step ahead in a background thread (decode while the caller computes).

PyAV's decoder, OpenCV and most NumPy work release the GIL, so on a multi-core CPU a video's next frames can
be decoded while the current one is tracked or rendered. `prefetch` keeps at most `depth` items ready, passes
the source's exceptions to the caller at the position they happened, and closes the source (its files) in
the background thread when the caller stops early.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
"""Marks the end of the source (with an exception or None) in the queue."""


def prefetch(items: Iterable[T], depth: int = 2, name: str = "real3d-prefetch") -> Iterator[T]:
    """Yield `items` in order while a thread computes up to `depth` of the next ones.

    Memory: at most `depth` + 1 items live at once. An exception of the source is raised by the `next()`
    that would have returned its item; closing this generator (e.g. `islice` ends, an error in the caller)
    stops the thread and closes the source."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for x in it:
                if not put((x, None)):
                    return
            put((_END, None))
        except BaseException as e:  # handed to the caller's thread
            put((_END, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            x, err = q.get()
            if x is _END:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()
        worker.join()
