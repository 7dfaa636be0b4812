"""The training snapshot: the bundled corpus plus the store's labelled messages and pairs, as one JSON file.

The file format and the corpus reading are those of ``model.contract`` (which ``training.corpus`` reads too). Bundled
messages keep their split; stored ones carry none, so the trainer puts them in train or validation by group and never
in test: the test split that gates promotion stays the bundled one. A stored message whose text is a bundled test
message is left out for the same reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from model.contract import MESSAGES_FILE, PAIRS_FILE, STORED_PREFIX, read_jsonl, write_snapshot_file
from service.store.models import Message, Pair
from service.store.repository import all_pairs, labelled_messages


@dataclass(frozen=True)
class Snapshot:
    path: Path
    sha256: str
    counts: dict[str, int]


def write_snapshot(session: Session, corpus_dir: Path, path: Path) -> Snapshot:
    """Write the snapshot to ``path`` (atomically) and return its sha256 and what went into it."""
    bundled = read_jsonl(corpus_dir / MESSAGES_FILE)
    bundled_pairs = read_jsonl(corpus_dir / PAIRS_FILE)
    test_texts = {_normalised(record["text"]) for record in bundled if record.get("split") == "test"}
    labelled, judged = labelled_messages(session), all_pairs(session)
    # An unpublished message (no text) cannot be labelled, so none should be here; never train on one regardless.
    stored = [m for m in labelled if m.text is not None and _normalised(m.text) not in test_texts]
    groups = _groups([m.id for m in stored], judged)
    records = [_record(message, groups[message.id]) for message in stored]
    pairs = _consensus_pairs(judged, {m.id for m in stored})
    sha256 = write_snapshot_file(path, bundled + records, bundled_pairs + pairs)
    counts = {
        "messages": len(bundled) + len(records),
        "pairs": len(bundled_pairs) + len(pairs),
        "bundled_messages": len(bundled),
        "stored_labelled": len(records),
        "stored_pairs": len(pairs),
        "stored_in_test_skipped": len(labelled) - len(stored),
    }
    return Snapshot(path, sha256, counts)


def _record(message: Message, group: str) -> dict[str, Any]:
    assert message.label_mean is not None  # only labelled messages reach the snapshot
    return {
        "id": _snapshot_id(message.id),
        "text": message.text,
        "sender": message.sender or "",
        "recipient": message.recipient or "",
        "date": message.date.isoformat() if message.date else "",
        "occasion": message.occasion or "",
        "language": message.language,
        "score": round(message.label_mean, 4),
        "group": group,
        "annotators": len(message.labels),
    }


def _snapshot_id(message_id: int) -> str:
    return f"{STORED_PREFIX}{message_id}"


def _groups(ids: list[int], pairs: list[Pair]) -> dict[int, str]:
    """Messages joined by pairs share a group, so that the trainer keeps them in one split (union-find)."""
    parent = {i: i for i in ids}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        if pair.warmer_id in parent and pair.cooler_id in parent:
            low, high = sorted((root(pair.warmer_id), root(pair.cooler_id)))
            parent[high] = low
    return {i: f"stored-group-{root(i)}" for i in ids}


def _consensus_pairs(pairs: list[Pair], kept: set[int]) -> list[dict[str, Any]]:
    """One pair per two messages, in the direction most annotators judged; a tie says nothing and is left out."""
    votes = Counter((p.warmer_id, p.cooler_id) for p in pairs if p.warmer_id in kept and p.cooler_id in kept)
    kinds = {(p.warmer_id, p.cooler_id): p.kind for p in pairs}
    chosen = []
    for (warmer, cooler), count in sorted(votes.items()):
        if count > votes.get((cooler, warmer), 0):
            chosen.append(
                {
                    "warmer": _snapshot_id(warmer),
                    "cooler": _snapshot_id(cooler),
                    "kind": kinds[(warmer, cooler)],
                    "votes": count,
                }
            )
    return chosen


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()
