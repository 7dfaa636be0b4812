"""Who this process is among the replicas that share one database and one registry: its id, and whether the holder
of a training run's lease is a process of this machine that is gone.

A replica id is ``hostname:pid``: unique among live processes, readable in ``/v1/info`` and in a run's row, and enough
for a process that restarts on the same machine to recognise a run its crashed predecessor left behind.
"""

from __future__ import annotations

import os
import socket
from functools import cache


@cache
def replica_id() -> str:
    """``hostname:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def on_this_host(holder: str | None) -> bool:
    """True when ``holder`` (a replica id) names a process of this machine."""
    return holder is not None and holder.rpartition(":")[0] == socket.gethostname()


def gone_from_this_host(holder: str | None) -> bool:
    """True when ``holder`` names a process of this machine that no longer runs, or this very process (a container
    restarted under the same hostname and pid): either way, nobody is left to finish its run."""
    if not on_this_host(holder):
        return False
    assert holder is not None
    pid = int(holder.rpartition(":")[2])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False
