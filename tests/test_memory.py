"""The allocator settings that keep the service's resident memory near what it holds."""

from __future__ import annotations

import platform

import pytest

from service.memory import cap_heap_arenas, release_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap arenas are a glibc setting")
def test_heap_arenas_can_be_capped_on_glibc() -> None:
    assert cap_heap_arenas(8) is True


def test_releasing_freed_memory_keeps_live_objects() -> None:
    kept = [bytes([i % 256]) * 4096 for i in range(1000)]
    dropped = [bytes(4096) for _ in range(10_000)]
    del dropped
    release_freed_memory()
    assert all(block == bytes([i % 256]) * 4096 for i, block in enumerate(kept))
