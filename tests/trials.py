"""Counted fault trials: how many a test runs, and where it writes what each one found (for RELIABILITY.md).

A fault test runs ``TRIALS`` trials (``DIPLOTONE_FAULT_TRIALS``, 1 in the fast suite) and, when
``DIPLOTONE_FAULT_LOG`` names a file, appends one JSON line per trial to it.
"""

from __future__ import annotations

import json
import os
from typing import Any

TRIALS = int(os.environ.get("DIPLOTONE_FAULT_TRIALS", "1"))


def record_trial(fault: str, **facts: Any) -> None:
    """Append what one trial of ``fault`` found to ``DIPLOTONE_FAULT_LOG``, if it is set."""
    log = os.environ.get("DIPLOTONE_FAULT_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps({"fault": fault, **facts}) + "\n")
