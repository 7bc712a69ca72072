"""The glibc allocator setting used by the neural backend."""

from __future__ import annotations

import platform
import sys

import pytest

from real3d import cpu_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_applies_on_glibc_and_is_idempotent() -> None:
    assert cpu_memory.keep_freed_memory() is True
    assert cpu_memory.keep_freed_memory(1 << 20) is True  # a lower threshold is already covered
    assert cpu_memory._applied >= 1 << 30


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch) -> None:
    monkeypatch.setattr(cpu_memory, "_applied", None)
    monkeypatch.setattr(cpu_memory.sys, "platform", "darwin")
    assert cpu_memory.keep_freed_memory() is False
    assert cpu_memory._applied is None
