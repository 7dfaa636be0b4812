"""How the service process uses the machine: heap arenas, freed memory, thread priorities."""

from __future__ import annotations

import os
import platform
import threading

import pytest

from service.process import cap_heap_arenas, lower_priority, release_freed_memory, thread_ids


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap arenas are a glibc setting")
def test_heap_arenas_can_be_capped_on_glibc() -> None:
    assert cap_heap_arenas(8) is True


def test_releasing_freed_memory_keeps_live_objects() -> None:
    kept = [bytes([i % 256]) * 4096 for i in range(1000)]
    dropped = [bytes(4096) for _ in range(10_000)]
    del dropped
    release_freed_memory()
    assert all(block == bytes([i % 256]) * 4096 for i, block in enumerate(kept))


@pytest.mark.skipif(not hasattr(os, "setpriority") or not thread_ids(), reason="per-thread priority is Linux's")
def test_lower_priority_lowers_only_the_threads_named() -> None:
    started, release = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def worker() -> None:
        seen["id"] = threading.get_native_id()
        started.set()
        release.wait(5)

    thread = threading.Thread(target=worker)
    before = thread_ids()
    thread.start()
    started.wait(5)
    try:
        new = thread_ids() - before
        assert new == {seen["id"]}
        main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        lower_priority(new, niceness=main_before + 5)
        assert os.getpriority(os.PRIO_PROCESS, seen["id"]) == main_before + 5
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
    finally:
        release.set()
        thread.join()
