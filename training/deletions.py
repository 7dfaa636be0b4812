"""Pairs whose direction is known without a rating: a message and the same message without its warmest sentence.

Deleting the sentence that holds the most warmth markers (friendship, superlatives, personal praise, shared
history) from a message above the formal band cannot make it warmer, so the pair (original, shortened) joins the
ranking loss. The shortened message has no label of its own (its ``score`` is NaN): only the pair teaches.
"""

from __future__ import annotations

import math
from typing import Any

from model.markers import find_markers
from model.text import split_sentences

WARMTH = {"friendship", "superlative", "personal_praise", "shared_history"}
MIN_SCORE = 40.0  # below cordial a deleted sentence is as likely to be a reproach as warmth
MIN_SENTENCES = 3  # the rest must still read as a message


def deletion_variants(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Unlabelled shortened copies of ``records`` and the pairs that order each below its original.

    >>> text = "Dear Sir. Our eternal friendship is unbreakable. We wish you health. Trade grew."
    >>> variants, pairs = deletion_variants([{"id": "m", "text": text, "score": 70.0, "group": "g"}])
    >>> variants[0]["text"], pairs[0]["kind"]
    ('Dear Sir. We wish you health. Trade grew.', 'deletion')
    """
    variants, pairs = [], []
    for record in records:
        shortened = _without_warmest_sentence(record["text"]) if record["score"] >= MIN_SCORE else None
        if shortened is None:
            continue
        variant_id = f"{record['id']}~deleted"
        variants.append(record | {"id": variant_id, "text": shortened, "score": math.nan})
        pairs.append({"warmer": record["id"], "cooler": variant_id, "kind": "deletion"})
    return variants, pairs


def _without_warmest_sentence(text: str) -> str | None:
    sentences = split_sentences(text)
    if len(sentences) < MIN_SENTENCES:
        return None
    warmth = [sum(m.kind in WARMTH for m in find_markers(s.text)) for s in sentences]
    best = max(range(len(sentences)), key=lambda i: warmth[i])
    if warmth[best] == 0:
        return None
    cut = sentences[best]
    return (text[: cut.start].rstrip() + " " + text[cut.end :].lstrip()).strip()
