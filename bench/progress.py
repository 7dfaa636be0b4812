"""Progress on stderr while the bench runs: one line per phase and per round, with the time since the start."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_STARTED = time.monotonic()


def say(message: str) -> None:
    """One progress line: ``[bench  123 s] message``."""
    print(f"[bench {time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


@contextmanager
def phase(what: str) -> Iterator[None]:
    """Announce ``what``, then say how long it took."""
    say(f"{what} ...")
    started = time.monotonic()
    yield
    say(f"{what}: done in {time.monotonic() - started:.1f} s")
