"""How the service process uses the machine: heap memory and which threads get the CPU first.

Memory (glibc's allocator; elsewhere these do nothing): glibc gives every thread that allocates its own heap arena,
up to eight per core, and keeps freed memory in them; the service's threads (event loop, request pool, batcher,
ONNX Runtime's pool) each grew one under load.

CPU: on 2 cores the model's threads can take all of both. Under 2× overload the event loop then got so little CPU
that requests waited up to 50 s before it even read them (and a client gave up at 60 s), where the queue alone
bounds the wait at about 256 texts ÷ the model's rate. Model threads run at a lower priority (niceness 10): they
still get every cycle the event loop does not need, and the loop reads, refuses (429) and answers at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Iterable

log = logging.getLogger("diplotone.process")
M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
MODEL_NICENESS = 10  # model threads yield the CPU to the event loop (0); see the module's docstring


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def cap_heap_arenas(count: int) -> bool:
    """Let at most ``count`` heap arenas exist; threads created afterwards share them. True if it took effect."""
    libc = _glibc()
    applied = bool(libc is not None and libc.mallopt(M_ARENA_MAX, count) == 1)
    if not applied:
        log.info("heap arenas not capped: not glibc")
    return applied


def release_freed_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the operating system."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def thread_ids() -> set[int]:
    """Native ids of this process's threads, including those a library started (Linux; empty elsewhere)."""
    try:
        return {int(entry) for entry in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def lower_priority(ids: Iterable[int], niceness: int = MODEL_NICENESS) -> None:
    """Set the niceness of these threads (on Linux each thread has its own; raising it needs no privilege)."""
    for thread in ids:
        # OSError: the thread has ended, or the platform has no per-thread priority; nothing to lower.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
