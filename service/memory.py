"""Keeping the service's resident memory near what it holds (glibc's allocator; elsewhere these do nothing).

glibc gives every thread that allocates its own heap arena, up to eight per core, and keeps freed memory in them.
The service's threads (event loop, request pool, batcher, ONNX Runtime's pool) each grew one under load, and the
ONNX export at load time leaves its buffers behind in the heap it used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("diplotone.memory")
M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


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
