"""`prefetch`: same items in the same order, computed ahead in another thread; errors and early stops."""

from __future__ import annotations

import threading
import time
from itertools import islice

import pytest

from real3d.io.prefetch import prefetch


def test_same_items_in_order():
    assert list(prefetch(range(100), depth=3)) == list(range(100))
    assert list(prefetch([])) == []


def test_items_are_made_in_another_thread_ahead_of_the_caller():
    made_in, made = set(), []

    def source():
        for i in range(6):
            made_in.add(threading.current_thread().name)
            made.append(i)
            yield i

    it = prefetch(source(), depth=2)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(made) < 3 and time.monotonic() < deadline:  # 1 taken + 2 queued ahead
        time.sleep(0.01)
    time.sleep(0.1)
    assert 3 <= len(made) <= 4  # 1 taken + 2 queued (+ 1 made, waiting for room): bounded, never all 6
    assert list(it) == [1, 2, 3, 4, 5]
    assert threading.current_thread().name not in made_in


class _Broken(Exception):
    pass


def test_source_error_is_raised_at_its_position():
    def source():
        yield 1
        yield 2
        raise _Broken("frame 3 is corrupt")

    it = prefetch(source())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(_Broken, match="frame 3"):
        next(it)


def test_early_stop_closes_the_source_and_the_thread():
    closed = threading.Event()

    def source():
        try:
            yield from range(10**9)
        finally:
            closed.set()

    before = threading.active_count()
    assert list(islice(prefetch(source(), depth=4), 5)) == [0, 1, 2, 3, 4]
    assert closed.wait(5)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        next(prefetch(range(3), depth=0))
