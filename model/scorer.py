"""The Scorer: a Predictor's scores explained (calibrated interval, band, markers, sentence contributions) in the
result shape of ``model.results``, and two messages compared."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.bands import band_of
from model.calibration import Calibration
from model.compare import explain_difference
from model.encoding import EncodedMessage
from model.engines.runtime import Engine
from model.errors import check_text
from model.markers import find_markers
from model.neighbours import Neighbours
from model.network import EffusivenessNet, NetworkConfig
from model.predictor import DEFAULT_BATCH_TOKENS, Predictor
from model.results import Comparison, ScoreResult, SentenceScore
from model.tokens import Tokenizer


class Scorer:
    """Scores diplomatic messages 0-100 for effusiveness and explains each score.

    >>> scorer = Scorer.from_pretrained("var/models/2026-11-29-lora-3f9a2c")  # doctest: +SKIP
    >>> scorer.score(["Dear friend, warmest congratulations!"])[0].band  # doctest: +SKIP
    'warm'
    """

    def __init__(self, predictor: Predictor, calibration: Calibration) -> None:
        self.predictor = predictor
        self.calibration = calibration

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        engine: str = "torch",
        threads: int | None = None,
        parity_texts: Sequence[str] | None = None,
        calibration_texts: Sequence[str] | None = None,
    ) -> Scorer:
        """Load a version folder: its ``Predictor`` (see ``Predictor.from_pretrained`` for the engine arguments)
        and its calibration."""
        predictor = Predictor.from_pretrained(
            folder, engine=engine, threads=threads, parity_texts=parity_texts, calibration_texts=calibration_texts
        )
        return cls(predictor, Calibration.load(Path(folder)))

    @classmethod
    def from_prepared(
        cls, folder: str | Path, *, engine: str = "onnx-int8", threads: int | None = None
    ) -> Scorer | None:
        """Load a version whose engine is prepared, without torch's encoder or transformers; None if it is not
        (see ``Predictor.from_prepared``)."""
        predictor = Predictor.from_prepared(folder, engine=engine, threads=threads)
        return None if predictor is None else cls(predictor, Calibration.load(Path(folder)))

    # What the predictor holds, read through the Scorer by callers that have one (the service's /v1/info, the CLI).
    @property
    def version(self) -> str:
        return self.predictor.version

    @property
    def engine(self) -> Engine:
        return self.predictor.engine

    @property
    def engine_report(self) -> dict[str, Any]:
        return self.predictor.engine_report

    @property
    def net(self) -> EffusivenessNet:
        return self.predictor.net

    @property
    def tokenizer(self) -> Tokenizer:
        return self.predictor.tokenizer

    @property
    def config(self) -> NetworkConfig:
        return self.predictor.config

    @property
    def neighbours(self) -> Neighbours | None:
        return self.predictor.neighbours

    @property
    def max_tokens(self) -> int:
        return self.predictor.max_tokens

    def predict(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        """Scores only, shape (len(texts),): ``Predictor.predict``."""
        return self.predictor.predict(texts, batch_tokens)

    def predict_with_distance(
        self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and distances to the training data: ``Predictor.predict_with_distance``."""
        return self.predictor.predict_with_distance(texts, batch_tokens)

    def score(
        self,
        texts: Sequence[str],
        *,
        max_chars: int | None = None,
        exact_contributions: bool = False,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        progress: Callable[[int], None] | None = None,
    ) -> list[ScoreResult]:
        """Score and explain each text: band, calibrated interval, sentence scores and contributions, markers.

        Contributions remove a sentence's tokens from the pooled embedding (one encoder pass for everything); with
        ``exact_contributions`` each sentence is cut from the text and the rest re-encoded instead (n extra passes).

        >>> [r.band for r in scorer.score(["We take note of your letter.", "My dearest brother ..."])]  # doctest: +SKIP
        ['cold', 'effusive']
        """
        for index, text in enumerate(texts):
            check_text(text, max_chars=max_chars, field=f"texts[{index}]" if len(texts) > 1 else "text")
        predictor = self.predictor
        encoded = predictor.encode(texts)
        pooled = predictor.pool(encoded, batch_tokens, progress)
        scores = predictor.scores(pooled.message_sums, pooled.message_counts)
        alone = predictor.scores(pooled.sentence_sums, pooled.sentence_counts)
        if exact_contributions:
            without = self._scores_without_each_sentence(texts, encoded, scores, batch_tokens)
        else:
            rest_sums = pooled.message_sums[pooled.sentence_message] - pooled.sentence_sums
            rest_counts = pooled.message_counts[pooled.sentence_message] - pooled.sentence_counts
            without = predictor.scores(rest_sums, rest_counts)
            # A message of one sentence has no remainder: its sentence moves the score by nothing measurable.
            without = torch.where(rest_counts > 0, without, scores[pooled.sentence_message])
        distances = predictor.distances(pooled)
        results, cursor = [], 0
        for index, (text, message) in enumerate(zip(texts, encoded, strict=True)):
            n = len(message.sentences)
            score = float(scores[index])
            sentences = [
                SentenceScore(
                    span.start,
                    span.end,
                    span.text,
                    _round(alone[cursor + i]),
                    _round(score - float(without[cursor + i])),
                )
                for i, span in enumerate(message.sentences)
            ]
            cursor += n
            distance = None if distances is None else float(distances[index])
            results.append(self._result(score, sentences, text, distance))
        return results

    def compare(self, a: str, b: str, *, max_chars: int | None = None) -> Comparison:
        """Why ``b`` is warmer or cooler than ``a``: delta, probability, marker counts, dropped sentences.

        >>> scorer.compare(last_year, this_year).explanation.summary[0]  # doctest: +SKIP
        'friendship references: 7 → 3'
        """
        result_a, result_b = self.score([a, b], max_chars=max_chars)
        return self.comparison(result_a, result_b)

    def comparison(self, a: ScoreResult, b: ScoreResult) -> Comparison:
        """Compare two results already scored (by ``score``, or by a batcher that scored them among others)."""
        delta = b.score - a.score
        return Comparison(a, b, _round(delta), round(self.calibration.p_warmer(delta), 4), explain_difference(a, b))

    def _result(self, score: float, sentences: list[SentenceScore], text: str, distance: float | None) -> ScoreResult:
        low, high = self.calibration.interval(score, distance, text)
        return ScoreResult(
            _round(score),
            band_of(score),
            (_round(low), _round(high)),
            sentences,
            find_markers(text),
            self.version,
            self.calibration.is_unusual(distance),
            None if distance is None else round(distance, 4),
        )

    def _scores_without_each_sentence(
        self, texts: Sequence[str], encoded: list[EncodedMessage], scores: torch.Tensor, batch_tokens: int
    ) -> torch.Tensor:
        """Score each text once per sentence with that sentence cut out, all variants in one batched pass."""
        variants, owners = [], []
        for index, (text, message) in enumerate(zip(texts, encoded, strict=True)):
            for span in message.sentences:
                variants.append((text[: span.start] + " " + text[span.end :]).strip())
                owners.append(index)
        # A message of one sentence has no remainder: its sentence moves the score by nothing measurable.
        scorable = [i for i, variant in enumerate(variants) if variant]
        without = scores[torch.tensor(owners, dtype=torch.long)].clone()
        if scorable:
            pooled = self.predictor.pool(self.predictor.encode([variants[i] for i in scorable]), batch_tokens)
            without[torch.tensor(scorable)] = self.predictor.scores(pooled.message_sums, pooled.message_counts)
        return without


def _round(value: float | torch.Tensor) -> float:
    return round(float(value), 4)
