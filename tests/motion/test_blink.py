"""Blink schedules: official periodic frames, natural statistics, none."""

from __future__ import annotations

import numpy as np
import pytest

from real3d.motion.blink import blink_curve


def _runs(c: np.ndarray) -> list[tuple[int, int]]:
    on = np.concatenate([[False], c > 0, [False]])
    e = np.flatnonzero(np.diff(on.astype(np.int8)))
    return list(zip(e[::2], e[1::2]))


def test_periodic_matches_official_schedule():
    rng = np.random.default_rng(3)
    c = blink_curve(400, 25.0, "periodic", np.random.default_rng(3))
    lengths = [int(rng.integers(8, 12)) for _ in range(4)]
    expect = np.zeros(400)
    for start, n in zip(range(0, 400, 125), lengths):
        t = np.arange(n)
        expect[start : start + n] = 4 * t / n - 4 * t**2 / n**2
    np.testing.assert_allclose(c, expect, atol=1e-6)
    runs = _runs(c)
    assert [a for a, _ in runs] == [1, 126, 251, 376]  # closure is 0 at offset 0 of frames 0, 125, ...
    assert c.max() == pytest.approx(1.0)


def test_natural_statistics_over_ten_minutes():
    fps = 25.0
    c = blink_curve(int(600 * fps), fps, "natural", np.random.default_rng(0))
    assert c.min() >= 0.0 and c.max() <= 1.0
    runs = _runs(c)
    starts = np.array([a for a, _ in runs]) / fps
    durations = np.array([b - a + 1 for a, b in runs]) / fps  # +1: the zero-valued end frames
    gaps = np.diff(starts)
    singles = gaps[gaps > 1.0]
    assert 2.0 <= singles.mean() <= 6.0
    assert 100 <= len(runs) <= 300
    assert np.all(durations >= 0.1 - 1 / fps) and np.all(durations <= 0.4 + 2 / fps)
    # every blink reaches full closure, closing faster than opening
    rise, fall = [], []
    for a, b in runs:
        seg = c[a:b]
        assert seg.max() == pytest.approx(1.0)
        k = int(np.argmax(seg))
        rise.append(k + 1)
        fall.append(len(seg) - k)
    assert np.mean(rise) < np.mean(fall)
    doubles = np.sum(gaps < 0.7)
    assert 0.03 * len(runs) <= doubles <= 0.25 * len(runs)


def test_deterministic_and_none():
    a = blink_curve(500, 25.0, "natural", 7)
    b = blink_curve(500, 25.0, "natural", np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, blink_curve(500, 25.0, "natural", 8))
    assert np.all(blink_curve(100, 25.0, "none") == 0)
    assert blink_curve(0, 25.0, "natural").shape == (0,)
    with pytest.raises(ValueError):
        blink_curve(10, 25.0, "sometimes")
