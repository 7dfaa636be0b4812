"""The forms real messages take, counted: the figures the corpus guard and the composing passes check.

Real messages reach an analyst as news excerpts, posts and translations more often than as whole letters. The issue
that asked for corpus v3 counted them on 174 real messages; ``REAL_FORMS`` holds those counts, so a pass can be
compared with them (``python -m training.forms FILE...``).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Shares on the 174 real messages (issue 11), against which composed material is compared.
REAL_FORMS: dict[str, float] = {
    "median_words": 98,
    "under_60_words": 0.29,
    "over_300_words": 0.05,
    "ellipsis_joins": 0.51,
    "bracketed_connectives": 0.14,
    "quotation_marks": 0.20,
    "handles": 0.05,
    "dear_or_excellency_opening": 0.12,
}

KINDS = ("post", "coercive", "plain_praise", "condolence", "translated", "news_excerpt", "protocol", "other")
FORMS = ("letter", "agency_report", "note", "excerpt", "post", "statement")

_ELLIPSIS = re.compile(r"\[(?:\.\.\.|…)\]")
_CONNECTIVE = re.compile(r"\[(?!\.\.\.|…)[^\]\n]{1,60}\]")
_QUOTE = re.compile(r"[\"“”]")
_HANDLE = re.compile(r"(?<![\w@])@\w{2,}")
_OPENING = re.compile(r"^\W*(dear\b|your (excellency|majesty|highness)\b|excellency\b)", re.IGNORECASE)


def form_figures(texts: Iterable[str]) -> dict[str, float]:
    """The ``REAL_FORMS`` figures of ``texts``.

    >>> form_figures(["Dear friend, [...] our friendship [he said] endures."])["ellipsis_joins"]
    1.0
    """
    texts = list(texts)
    if not texts:
        raise ValueError("expected at least one text to count forms on; found none")
    words = [len(t.split()) for t in texts]

    def share(test: Any) -> float:
        return round(sum(1 for t in texts if test(t)) / len(texts), 3)

    return {
        "median_words": float(statistics.median(words)),
        "under_60_words": round(sum(n < 60 for n in words) / len(texts), 3),
        "over_300_words": round(sum(n > 300 for n in words) / len(texts), 3),
        "ellipsis_joins": share(_ELLIPSIS.search),
        "bracketed_connectives": share(_CONNECTIVE.search),
        "quotation_marks": share(_QUOTE.search),
        "handles": share(_HANDLE.search),
        "dear_or_excellency_opening": share(_OPENING.search),
    }


def check_part(records: Sequence[Mapping[str, Any]], source: str) -> list[str]:
    """Problems with one composing pass's records (schema, bands of each kind, excerpts pointing at letters)."""
    problems = []
    ids = {r.get("id") for r in records}
    required = ("id", "text", "sender", "recipient", "date", "occasion", "score", "group", "voice", "form", "kind")
    for number, record in enumerate(records, start=1):
        where = f"{source} record {number} ({record.get('id')})"
        problems += [f"{where}: field {name!r} missing or empty" for name in required if record.get(name) in (None, "")]
        score = record.get("score")
        if not isinstance(score, int | float) or not 0 <= score <= 100:
            problems.append(f"{where}: score must be a number in [0, 100]; found {score!r}")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(record.get("date"))):
            problems.append(f"{where}: date must be YYYY-MM-DD; found {record.get('date')!r}")
        if record.get("kind") not in KINDS:
            problems.append(f"{where}: kind must be one of {KINDS}; found {record.get('kind')!r}")
        if record.get("form") not in FORMS:
            problems.append(f"{where}: form must be one of {FORMS}; found {record.get('form')!r}")
        parent = record.get("excerpt_of")
        if parent is not None and parent not in ids:
            problems.append(f"{where}: excerpt_of {parent!r} is not a record of this pass")
    if len(ids) != len(records):
        problems.append(f"{source}: ids are not unique")
    return problems


def _main(paths: list[str]) -> int:
    records = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    problems = check_part(records, ", ".join(paths))
    print("\n".join(problems) or "schema: ok")
    figures = form_figures(r["text"] for r in records)
    print(f"{len(records)} records")
    for name, real in REAL_FORMS.items():
        print(f"  {name:28} {figures[name]:>7}   real messages: {real}")
    bands = [0, 0, 0, 0, 0]
    for r in records:
        bands[min(int(r["score"] // 20), 4)] += 1
    print("  bands cold..effusive", bands)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
