"""Sentence splitting with character spans, tuned for diplomatic letters.

Paragraph breaks, salutations ("Dear Comrade Chairman,") and sign-offs count as sentence boundaries; abbreviations
common in protocol ("H.E.", "Mr.", "No.") do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An end mark followed by space and an upper-case letter, a digit or a quote starts a new sentence ...
_END = re.compile(r"[.!?;]+[\"'\u201d\u2019)]*\s+(?=[\"'\u201c\u2018(]?[A-Z0-9\u00c0-\u024f])")
# ... unless the mark ends one of these abbreviations.
_ABBREVIATIONS = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|No|Nos|Gen|Col|Lt|Sr|Jr|Hon|Rt|Excl|Ref|vs|etc|e\.g|i\.e|U\.S|U\.K|H\.E|H\.M|H\.H)"
    r"|\b[A-Z])\.$"
)
_BREAK = re.compile(r"\n\s*\n|\n(?=\s*\S)")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


def split_sentences(text: str) -> list[Span]:
    """Split ``text`` into sentences; spans index into ``text`` and exclude surrounding whitespace.

    >>> [s.text for s in split_sentences("Dear friend,\\nI thank you. We agree.")]
    ['Dear friend,', 'I thank you.', 'We agree.']
    """
    spans: list[Span] = []
    for block_start, block_end in _blocks(text):
        cursor = block_start
        for match in _END.finditer(text, block_start, block_end):
            head = text[cursor : match.start() + len(match.group().rstrip())]
            if _ABBREVIATIONS.search(head.rstrip("\"'\u201d\u2019)")):
                continue
            _append(spans, text, cursor, match.start() + len(match.group().rstrip()))
            cursor = match.end()
        _append(spans, text, cursor, block_end)
    return spans


def _blocks(text: str) -> list[tuple[int, int]]:
    blocks, cursor = [], 0
    for match in _BREAK.finditer(text):
        blocks.append((cursor, match.start()))
        cursor = match.end()
    blocks.append((cursor, len(text)))
    return blocks


def _append(spans: list[Span], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append(Span(start, end, text[start:end]))


def words(text: str) -> list[str]:
    """Lower-case word tokens, for lexical comparisons."""
    return re.findall(r"[a-z0-9\u00c0-\u024f']+", text.lower())
