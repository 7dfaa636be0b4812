"""The labelled corpus: messages and pairwise judgements, from ``training/data/`` or a service snapshot.

The file formats (JSON Lines, the snapshot, the splits) are the service's as well and live in ``model.contract``; this
module checks the records and builds the ``Corpus``. A snapshot holds records of the same schema as the data files
(the service writes it from its store plus the bundled corpus). Messages labelled in the service carry no split: a
hash of their group puts a fixed share of them in ``user_test`` (the user's own held-out share, which the gate also
judges on) and the rest in train or validation, never in the corpus's test split, which stays fixed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value

from model.contract import (
    CORPUS_DIR,
    MESSAGES_FILE,
    PAIRS_FILE,
    SPLITS,
    read_jsonl,
    read_snapshot_file,
)

USER_TEST_SHARE = 20  # percent of the service's labelled groups held out to judge candidates on
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "text": str,
    "sender": str,
    "recipient": str,
    "date": str,
    "occasion": str,
    "score": (int, float),
}


@dataclass(frozen=True)
class Corpus:
    messages: Dataset  # every message, with a "split" column
    pairs: list[dict[str, str]]
    sha256: str  # of the files the corpus was read from

    def split(self, name: str) -> Dataset:
        indices = [i for i, split in enumerate(self.messages["split"]) if split == name]
        return self.messages.select(indices)

    def pairs_within(self, ids: set[str]) -> list[dict[str, str]]:
        return [p for p in self.pairs if p["warmer"] in ids and p["cooler"] in ids]

    def with_test_ids(self, prefix: str) -> Corpus:
        """The same corpus with only the test messages whose id starts with ``prefix`` (one part of the test split)."""
        rows = zip(self.messages["split"], self.messages["id"], strict=True)
        keep = [i for i, (split, message_id) in enumerate(rows) if split != "test" or message_id.startswith(prefix)]
        return Corpus(self.messages.select(keep), self.pairs, self.sha256)

    def split_sha256(self, name: str) -> str:
        """A fingerprint of one split's messages, scores and pairs: two evaluations compare only if theirs agree."""
        records = sorted(self.split(name).to_list(), key=lambda r: r["id"])
        content = [[r["id"], r["text"], r["score"]] for r in records]
        pairs = sorted([p["warmer"], p["cooler"]] for p in self.pairs_within({r["id"] for r in records}))
        return hashlib.sha256(json.dumps([content, pairs]).encode()).hexdigest()


def load_corpus(data_dir: Path = CORPUS_DIR) -> Corpus:
    """Read ``messages.jsonl`` and ``pairs.jsonl`` from ``data_dir``."""
    messages_path, pairs_path = data_dir / MESSAGES_FILE, data_dir / PAIRS_FILE
    records, pairs = read_jsonl(messages_path), read_jsonl(pairs_path)
    _check(records, pairs, str(messages_path))
    return Corpus(_dataset(records), pairs, _sha256(messages_path, pairs_path))


def load_snapshot(path: Path) -> Corpus:
    """Read a service snapshot; messages without a split are assigned train or validation by group."""
    records, pairs = read_snapshot_file(path)
    for record in records:
        record.setdefault("group", record.get("id"))
        record["split"] = record.get("split") or _stored_split(str(record["group"]))
    _check(records, pairs, str(path))
    return Corpus(_dataset(records), pairs, _sha256(path))


def _dataset(records: list[dict[str, Any]]) -> Dataset:
    # Built from parsed rows with explicit string columns: the JSON loader would turn "date" into a timestamp.
    columns = {
        name: Value("string")
        for name in ("id", "text", "sender", "recipient", "date", "occasion", "split", "group", "voice", "form", "kind")
    }
    columns["score"] = Value("float64")
    return Dataset.from_list(
        [{name: record.get(name) for name in columns} for record in records], features=Features(columns)
    )


def _split_for(group: str) -> str:
    bucket = int(hashlib.sha256(group.encode()).hexdigest(), 16) % 100
    return "validation" if bucket < 15 else "train"


def _stored_split(group: str) -> str:
    """A service-labelled group's split, fixed by its name, so the same labels land in the same share on every run."""
    bucket = int(hashlib.sha256(f"user_test:{group}".encode()).hexdigest(), 16) % 100
    return "user_test" if bucket < USER_TEST_SHARE else _split_for(group)


def _check(records: list[dict[str, Any]], pairs: list[dict[str, str]], source: str) -> None:
    ids = set()
    for line, record in enumerate(records, start=1):
        for field, kind in REQUIRED.items():
            if not isinstance(record.get(field), kind):
                raise ValueError(f"{source} record {line}: field {field!r} must be {kind}; found {record.get(field)!r}")
        if not 0 <= record["score"] <= 100:
            raise ValueError(f"{source} record {line}: score must lie in [0, 100]; found {record['score']}")
        if record.get("split") not in SPLITS:
            raise ValueError(f"{source} record {line}: split must be one of {SPLITS}; found {record.get('split')!r}")
        ids.add(record["id"])
    for number, pair in enumerate(pairs, start=1):
        missing = [pair.get(k) for k in ("warmer", "cooler") if pair.get(k) not in ids]
        if missing:
            raise ValueError(f"{source} pair {number}: ids {missing} are not messages of the corpus")


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()
