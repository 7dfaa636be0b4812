"""Why one message is warmer than another, in words an analyst can quote."""

from __future__ import annotations

from model.markers import MARKER_KINDS, count_markers
from model.results import Explanation, MarkerChange, ScoreResult, SentenceScore
from model.text import words

# Two sentences are counterparts when their word sets overlap this much (Dice coefficient): a reworded sentence
# still matches, a sentence about something else does not.
COUNTERPART_SIMILARITY = 0.5


def explain_difference(a: ScoreResult, b: ScoreResult) -> Explanation:
    """Marker counts on each side and the sentences of each side with no close counterpart on the other."""
    counts_a, counts_b = count_markers(a.markers), count_markers(b.markers)
    changes = [MarkerChange(kind, label, counts_a[kind], counts_b[kind]) for kind, label in MARKER_KINDS.items()]
    only_a = _unmatched(a.sentences, b.sentences)
    only_b = _unmatched(b.sentences, a.sentences)
    return Explanation(changes, only_a, only_b, _summary(a, b, changes, only_a, only_b))


def _unmatched(side: list[SentenceScore], other: list[SentenceScore]) -> list[SentenceScore]:
    """Sentences of ``side`` with no counterpart in ``other``, those that carried most warmth first."""
    other_words = [set(words(s.text)) for s in other]
    lonely = [s for s in side if not any(_dice(set(words(s.text)), o) >= COUNTERPART_SIMILARITY for o in other_words)]
    return sorted(lonely, key=lambda s: -s.contribution)


def _dice(x: set[str], y: set[str]) -> float:
    return 2 * len(x & y) / (len(x) + len(y)) if x or y else 1.0


def _summary(
    a: ScoreResult,
    b: ScoreResult,
    changes: list[MarkerChange],
    only_a: list[SentenceScore],
    only_b: list[SentenceScore],
) -> list[str]:
    direction = "warmer" if b.score > a.score else "cooler" if b.score < a.score else "as warm"
    lines = [f"B scores {b.score:.1f} ({b.band}) against {a.score:.1f} ({a.band}) for A: {direction}."]
    lines += [f"{c.label}: {c.a} → {c.b}" for c in sorted(changes, key=lambda c: -abs(c.b - c.a)) if c.a != c.b]
    lines += [f'did not appear this time: "{s.text}"' for s in only_a]
    lines += [f'new this time: "{s.text}"' for s in only_b]
    return lines
