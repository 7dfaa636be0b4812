"""Fold composing passes (``training/data/parts/*.jsonl`` and their ``-pairs.jsonl``) into the corpus files.

Each record keeps its group; the split is drawn from a hash of the group, so re-assembling gives the same splits:
held-out passes (``--held-out``) go to test whole, the others 70/15/15 to train, validation and test.
``python -m training.assemble PART.jsonl ... [--held-out PREFIX]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from model.contract import CORPUS_DIR, MESSAGES_FILE, PAIRS_FILE, read_jsonl
from training.forms import check_part

FIELDS = (
    "id", "text", "sender", "recipient", "date", "occasion", "language", "score", "split", "group", "voice", "form",
    "kind", "source", "excerpt_of",
)  # fmt: skip


def drawn_split(group: str) -> str:
    """train, validation or test for a group of a composed pass, 70/15/15 by a hash of its name."""
    bucket = int(hashlib.sha256(f"v3:{group}".encode()).hexdigest(), 16) % 100
    return "train" if bucket < 70 else "validation" if bucket < 85 else "test"


def assemble(parts: list[Path], held_out: tuple[str, ...], data_dir: Path = CORPUS_DIR) -> tuple[int, int]:
    """Append the parts' records and pairs to ``data_dir``; returns (messages, pairs) added."""
    messages_path, pairs_path = data_dir / MESSAGES_FILE, data_dir / PAIRS_FILE
    existing = {record["id"] for record in read_jsonl(messages_path)}
    records, pairs = [], []
    for part in parts:
        rows = read_jsonl(part)
        problems = check_part(rows, str(part))
        if problems:
            raise ValueError("; ".join(problems[:5]))
        records += rows
        pairs_file = part.with_name(part.stem + "-pairs.jsonl")
        pairs += read_jsonl(pairs_file) if pairs_file.exists() else []
    clashes = sorted(existing & {r["id"] for r in records})
    if clashes:
        raise ValueError(f"ids already in the corpus: {clashes[:5]}")
    out = _one_relation_per_series([_record(r, held_out) for r in records], pairs)
    with messages_path.open("a") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    with pairs_path.open("a") as handle:
        handle.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    return len(out), len(pairs)


def _one_relation_per_series(records: list[dict[str, Any]], pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Members of a series take the sender, recipient and occasion of its earliest member.

    A writer may address a later message to "the Government of X" instead of its President, or call a harder note an
    ultimatum: the text shows the change, and the relation stays one, so the timeline and the pair guards see one.
    """
    paired = {p[side] for p in pairs for side in ("warmer", "cooler")}
    earliest: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r["date"]):
        if record["id"] in paired:
            earliest.setdefault(record["group"], record)
    for record in records:
        first = earliest.get(record["group"])
        if first is not None and (record["id"] in paired or record.get("excerpt_of")):
            record.update({name: first[name] for name in ("sender", "recipient", "occasion")})
    return records


def _record(row: dict[str, Any], held_out: tuple[str, ...]) -> dict[str, Any]:
    record = {name: row.get(name) for name in FIELDS}
    record["score"] = float(row["score"])
    record["language"] = "en"
    record["split"] = "test" if row["id"].startswith(held_out) else drawn_split(row["group"])
    if record["excerpt_of"] is None:
        del record["excerpt_of"]
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", type=Path)
    parser.add_argument("--held-out", action="append", default=[], help="id prefix of a pass kept for test")
    options = parser.parse_args()
    added = assemble(options.parts, tuple(options.held_out))
    print(f"added {added[0]} messages and {added[1]} pairs")
