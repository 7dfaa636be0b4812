"""Benchmark messages of a fixed word count, cut from the corpus test split (read as a file, like the service does)."""

from __future__ import annotations

from pathlib import Path

from model.contract import CORPUS_DIR, MESSAGES_FILE, read_jsonl

CORPUS = CORPUS_DIR / MESSAGES_FILE


def corpus_texts(path: Path = CORPUS, split: str = "test") -> list[str]:
    """The texts of one split of ``messages.jsonl``, in file order."""
    if not path.is_file():
        raise FileNotFoundError(f"expected the corpus at {path}; found no such file")
    records = read_jsonl(path)
    texts = [record["text"] for record in records if record.get("split") == split]
    if not texts:
        raise ValueError(f"expected messages with split {split!r} in {path}; found none among {len(records)}")
    return texts


def messages_of(words: int, texts: list[str], count: int) -> list[str]:
    """``count`` messages of exactly ``words`` words: consecutive cuts of the test texts joined end to end.

    The stream wraps around when it runs out, so long messages repeat text once the test split is used up.
    """
    stream = [word for text in texts for word in text.split()]
    if not stream:
        raise ValueError("expected texts with words; found none")
    looped = stream * (words // len(stream) + 2)  # long enough for a cut of ``words`` from any start
    starts = [(index * words) % len(stream) for index in range(count)]
    return [" ".join(looped[start : start + words]) for start in starts]
