"""Result shapes shared by Python callers, the CLI's JSON and the HTTP API (see docs/design.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from model.markers import Marker


@dataclass(frozen=True)
class SentenceScore:
    start: int
    end: int
    text: str
    score: float  # the sentence scored on its own (its tokens pooled in context)
    contribution: float  # message score minus the score without this sentence


@dataclass(frozen=True)
class ScoreResult:
    score: float
    band: str
    interval: tuple[float, float]
    sentences: list[SentenceScore]
    markers: list[Marker]
    model_version: str
    unusual: bool = False  # the text is farther from the training data than 95% of validation messages
    distance: float | None = None  # mean cosine distance to the nearest training messages (None: not kept)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval)
        return data


@dataclass(frozen=True)
class MarkerChange:
    kind: str
    label: str
    a: int
    b: int


@dataclass(frozen=True)
class Explanation:
    markers: list[MarkerChange]
    only_in_a: list[SentenceScore]  # sentences of a with no close counterpart in b ("did not appear this time")
    only_in_b: list[SentenceScore]  # sentences of b with no close counterpart in a (new this time)
    summary: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Comparison:
    a: ScoreResult
    b: ScoreResult
    delta: float  # b.score - a.score
    p_b_warmer: float
    explanation: Explanation

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["a"], data["b"] = self.a.to_dict(), self.b.to_dict()
        return data
