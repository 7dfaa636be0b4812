"""The files the service and a training run exchange, written once for both: corpus, snapshot, progress, outcome.

The service starts ``python -m training`` as a separate process and never imports ``training``; the two meet only
through files whose names, shapes and writing rules live here (docs/design.md, "The service and a training run"):

- the corpus (``CORPUS_DIR``): ``messages.jsonl`` and ``pairs.jsonl``, JSON Lines, each message in one of ``SPLITS``;
- a snapshot: one JSON object ``{"created", "messages", "pairs"}`` of the same records, which the service writes from
  its store plus the corpus and the trainer reads instead of the corpus;
- ``progress.json`` (``RunProgress``), rewritten by the trainer as it goes;
- ``outcome.json`` (``RunOutcome``), written once when the trainer ends: the candidate and the gate's verdict, or
  the error. The trainer never activates a version; the service does, after loading and probing it.

Every file that another process may read while it is written goes through ``write_atomically``: a reader sees the
old content or the new, never a torn write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # holds model/, training/ and service/: where the trainer runs
CORPUS_DIR = SOURCE_ROOT / "training" / "data"  # the corpus bundled with the code
MESSAGES_FILE, PAIRS_FILE = "messages.jsonl", "pairs.jsonl"
CORPUS_FILES = (MESSAGES_FILE, PAIRS_FILE)
SPLITS = ("train", "validation", "test", "user_test")  # user_test: a held-out share of the service's labels
STORED_PREFIX = "stored-"  # the ids, in a snapshot, of the messages labelled in the service
PROGRESS_FILE, OUTCOME_FILE = "progress.json", "outcome.json"

Record = TypeVar("Record", "RunProgress", "RunOutcome")


class RunStatus(StrEnum):
    """Where a retraining run stands; only the service sets it (the trainer reports, the service decides)."""

    RUNNING = "running"
    PROMOTED = "promoted"  # passed the gate and now serving
    REJECTED = "rejected"  # the gate found it worse; kept in the registry, not served
    FAILED = "failed"  # an error, a crash, a kill, or a candidate that passed but could not be served


# ------------------------------------------------------------------------------------------------------------ files


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, synced, then renamed over it.

    >>> write_atomically(Path("var/models/active"), "2026-12-03-lora-904166\\n")  # doctest: +SKIP
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def parse_jsonl(lines: Iterable[str], source: object) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line of JSON Lines, blank lines skipped, read as it streams (an archive of
    millions of lines is never held whole); a bad line is a ``ValueError`` naming ``source`` and the line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} line {number}: expected a JSON object; {error.msg}") from error
        if not isinstance(record, dict):
            raise ValueError(f"{source} line {number}: expected a JSON object; found {type(record).__name__}")
        yield number, record


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file, blank lines skipped; a bad line is a ``ValueError`` naming it.

    >>> len(read_jsonl(CORPUS_DIR / MESSAGES_FILE)) > 0  # doctest: +SKIP
    True
    """
    return [record for _, record in parse_jsonl(path.read_text(encoding="utf-8").splitlines(), path)]


def json_safe(value: Any) -> Any:
    """A copy of ``value`` with NaN and infinities as None: JSON has no such numbers (a metric without pairs is NaN).

    >>> json_safe({"pairwise_accuracy": float("nan"), "n": 3})
    {'pairwise_accuracy': None, 'n': 3}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


# ----------------------------------------------------------------------------------------------------------- corpus


def missing_corpus_files(corpus_dir: Path) -> list[Path]:
    """The corpus files that ``corpus_dir`` lacks (empty when it is complete)."""
    return [corpus_dir / name for name in CORPUS_FILES if not (corpus_dir / name).is_file()]


def split_texts(corpus_dir: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, list[str]]:
    """The message texts of each of ``splits``, in file order; empty lists when the corpus has no messages file."""
    texts: dict[str, list[str]] = {split: [] for split in splits}
    path = corpus_dir / MESSAGES_FILE
    for record in read_jsonl(path) if path.is_file() else []:
        if record.get("split") in texts:
            texts[record["split"]].append(record["text"])
    return texts


def write_snapshot_file(path: Path, messages: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    """Write a snapshot (atomically); return the sha256 of its bytes, which the run records."""
    payload = {"created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "messages": messages, "pairs": pairs}
    data = json.dumps(payload, ensure_ascii=False).encode()
    write_atomically(path, data)
    return hashlib.sha256(data).hexdigest()


def read_snapshot_file(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages and pairs of a snapshot; ``ValueError`` if it is not one."""
    try:
        snapshot = json.loads(path.read_text(encoding="utf-8"))
        return list(snapshot["messages"]), list(snapshot.get("pairs", []))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: expected a JSON object with a 'messages' list; {error}") from error


# ------------------------------------------------------------------------------------------------- progress, outcome


@dataclass(frozen=True)
class RunProgress:
    """How far a run has got; ``phase`` is "training", then "evaluating", then "preparing" (the serving engine)."""

    phase: str
    step: int
    max_steps: int
    epoch: float | None = None
    loss: float | None = None
    elapsed_seconds: float | None = None
    eta_seconds: float | None = None


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: a candidate (installed, never activated) with the gate's verdict, or an error."""

    version: str | None = None
    passed: bool = False  # the gate found it no worse than the active version; serving it is the service's call
    previous: str | None = None  # the version active when the gate compared
    reasons: list[str] = field(default_factory=list)  # why the gate refused it
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    previous_user_test: dict[str, Any] | None = None  # the active version's figures on the held-out user labels


def write_progress(path: Path, progress: RunProgress) -> None:
    """The one writer of ``progress.json``."""
    write_atomically(path, json.dumps(asdict(progress)))


def read_progress(path: Path) -> RunProgress | None:
    """The progress in ``path``, or None while there is none (or it is not a progress record)."""
    return _read_record(path, RunProgress)


def write_outcome(path: Path, outcome: RunOutcome) -> None:
    """The one writer of ``outcome.json``."""
    write_atomically(path, json.dumps(asdict(outcome), indent=2))


def read_outcome(path: Path) -> RunOutcome | None:
    """The outcome in ``path`` (NaN figures as None), or None if there is none or it is not an outcome record."""
    outcome = _read_record(path, RunOutcome)
    if outcome is None:
        return None
    return RunOutcome(**{**asdict(outcome), "metrics": json_safe(outcome.metrics or {})})


def _read_record(path: Path, kind: type[Record]) -> Record | None:
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(kind)}
        return kind(**{key: value for key, value in data.items() if key in known})
    except (OSError, ValueError, TypeError, AttributeError):
        return None
