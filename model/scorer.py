"""The Scorer: load a model version, score texts, explain the scores and compare two messages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from model.artifacts import verify_manifest
from model.bands import band_of
from model.calibration import Calibration
from model.compare import explain_difference
from model.encoding import EncodedMessage, Window, collate_windows, encode_messages
from model.engines import ENGINES, EncoderInputs, Engine, OnnxEngine, ParityCache, TorchEngine, onnx_files, parity
from model.errors import check_text
from model.markers import find_markers
from model.neighbours import Neighbours
from model.network import EffusivenessNet, NetworkConfig, load_network
from model.results import Comparison, ScoreResult, SentenceScore

log = logging.getLogger("diplotone.scorer")
FP32_TOLERANCE = 0.1  # score points between ONNX fp32 and torch, on every parity text
INT8_MIN_SPEARMAN = 0.995  # int8 against fp32, over the parity texts
INT8_TOLERANCE = 2.0  # score points between int8 and fp32, on every parity text
DEFAULT_BATCH_TOKENS = 2048  # padded tokens per encoder call: larger calls spill the CPU caches and run ~1.4x slower


@dataclass
class _Pooled:
    """Per-message and per-sentence sums of content-token states, from one pass over all windows."""

    message_sums: torch.Tensor  # (messages, hidden), float64
    message_counts: torch.Tensor  # (messages,)
    sentence_sums: torch.Tensor  # (sentences, hidden), sentences of all messages concatenated
    sentence_counts: torch.Tensor  # (sentences,)
    sentence_message: torch.Tensor  # (sentences,) owning message of each sentence


class Scorer:
    """Scores diplomatic messages 0-100 for effusiveness.

    >>> scorer = Scorer.from_pretrained("var/models/2026-11-29-lora-3f9a2c")  # doctest: +SKIP
    >>> scorer.score(["Dear friend, warmest congratulations!"])[0].band  # doctest: +SKIP
    'warm'
    """

    def __init__(
        self,
        net: EffusivenessNet,
        tokenizer: PreTrainedTokenizerBase,
        config: NetworkConfig,
        calibration: Calibration,
        version: str,
        engine: Engine | None = None,
        neighbours: Neighbours | None = None,
    ) -> None:
        self.net = net.eval()
        self.engine: Engine = engine or TorchEngine(net)
        self.engine_report: dict[str, Any] = {"engine": self.engine.name}
        self.tokenizer = tokenizer
        self.config = config
        self.calibration = calibration
        self.version = version
        self.neighbours = neighbours
        self._special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)

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
        """Load a version folder after checking every file against its manifest (``ArtifactCorrupt`` if not).

        ``engine`` picks the encoder: "torch" (the reference), "onnx-fp32" or "onnx-int8" (exported once and cached
        in the version's folder). With ``parity_texts`` an ONNX engine must agree with the reference on them —
        fp32 within 0.1 points everywhere; int8 with Spearman ≥ 0.995 against fp32 and no score more than 2 points
        off — or it is refused for the next engine down, with the reason logged and kept in ``engine_report``.
        ``calibration_texts`` (other texts than the parity ones) set the int8 smoothing scales at export. A parity
        verdict is cached beside the ONNX files, keyed by their stamp and the texts, so a restart skips the check.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; found {engine!r}")
        folder = Path(folder)
        manifest = verify_manifest(folder)
        net, tokenizer, config = load_network(folder)
        version = str(manifest.get("version") or folder.name)
        scorer = cls(net, tokenizer, config, Calibration.load(folder), version, neighbours=Neighbours.load(folder))
        if engine != "torch":
            calibration = scorer.encoder_inputs(list(calibration_texts or []))
            scorer._use_onnx(folder, engine, threads, list(parity_texts or []), calibration)
        return scorer

    def encoder_inputs(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> list[EncoderInputs]:
        """The (input_ids, attention_mask) batches that scoring ``texts`` feeds the encoder."""
        if not texts:
            return []
        windows = [w for m in encode_messages(self.tokenizer, texts, self.max_tokens) for w in m.windows]
        batches = (collate_windows(b, *self._special) for b in _length_sorted_batches(windows, batch_tokens))
        return [(batch.input_ids, batch.attention_mask) for batch in batches]

    def _use_onnx(
        self, folder: Path, wanted: str, threads: int | None, texts: list[str], calibration: list[EncoderInputs]
    ) -> None:
        paths = onnx_files(folder, self.net, calibration)
        verdicts = ParityCache(folder / "cache", texts)
        cached = verdicts.get(wanted) if texts else None
        report = {**cached, "from_cache": True} if cached else self._check_parity(paths, wanted, threads, texts)
        if texts and not cached:
            verdicts.put(wanted, report)
        if "refused" in report:
            refused, reason = next(iter(report["refused"].items()))
            log.warning("engine %s refused: %s; serving with %s", refused, reason, report["engine"])
        if report["engine"] != "torch":
            self.engine = OnnxEngine(paths[report["engine"]], report["engine"], threads)
        self.engine_report = report

    def _check_parity(
        self, paths: dict[str, Path], wanted: str, threads: int | None, texts: list[str]
    ) -> dict[str, Any]:
        """Which engine may serve: ``wanted``, or the next one down (fp32, then torch), with the refusal's reason."""
        report: dict[str, Any] = {"requested": wanted, "parity_texts": len(texts), "engine": wanted}
        if not texts:
            return report
        fp32 = OnnxEngine(paths["onnx-fp32"], "onnx-fp32", threads)
        fp32_scores = self._predict_with(fp32, texts)
        report["onnx-fp32"] = gap = parity(self.predict(texts), fp32_scores)
        if gap["max_abs_diff"] > FP32_TOLERANCE:
            reason = f"differs from torch by up to {gap['max_abs_diff']:.3f} points (> {FP32_TOLERANCE})"
            return {**report, "engine": "torch", "refused": {"onnx-fp32": reason}}
        if wanted == "onnx-int8":
            int8 = OnnxEngine(paths["onnx-int8"], "onnx-int8", threads)
            report["onnx-int8"] = check = parity(fp32_scores, self._predict_with(int8, texts))
            if check["spearman"] < INT8_MIN_SPEARMAN or check["max_abs_diff"] > INT8_TOLERANCE:
                reason = (
                    f"Spearman {check['spearman']:.4f} against fp32 (needs ≥ {INT8_MIN_SPEARMAN}), "
                    f"largest gap {check['max_abs_diff']:.2f} points (allowed {INT8_TOLERANCE})"
                )
                return {**report, "engine": "onnx-fp32", "refused": {"onnx-int8": reason}}
        return report

    def _predict_with(self, engine: Engine, texts: Sequence[str]) -> np.ndarray:
        current, self.engine = self.engine, engine
        try:
            return self.predict(texts)
        finally:
            self.engine = current

    @property
    def max_tokens(self) -> int:
        return self.config.max_tokens

    def predict(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        """Scores only (no explanation), shape (len(texts),).

        >>> scorer.predict(["Excellency, please accept my congratulations."])  # doctest: +SKIP
        array([27.4])
        """
        return self.predict_with_distance(texts, batch_tokens)[0]

    def predict_with_distance(
        self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and distances to the training data, each shape (len(texts),); distances None without neighbours."""
        for text in texts:
            check_text(text)
        if not texts:
            return np.zeros(0), (np.zeros(0) if self.neighbours else None)
        pooled = self._pool(encode_messages(self.tokenizer, texts, self.max_tokens), batch_tokens)
        return self._head(pooled.message_sums, pooled.message_counts).numpy(), self._distances(pooled)

    def _distances(self, pooled: _Pooled) -> np.ndarray | None:
        if self.neighbours is None:
            return None
        return self.neighbours.distances(_mean_embeddings(pooled))

    def embed(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        """Mean-pooled encoder embeddings, shape (len(texts), hidden): the input of the head."""
        return _mean_embeddings(self._pool(encode_messages(self.tokenizer, texts, self.max_tokens), batch_tokens))

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
        encoded = encode_messages(self.tokenizer, texts, self.max_tokens)
        pooled = self._pool(encoded, batch_tokens, progress)
        scores = self._head(pooled.message_sums, pooled.message_counts)
        alone = self._head(pooled.sentence_sums, pooled.sentence_counts)
        if exact_contributions:
            without = self._scores_without_each_sentence(texts, encoded, scores, batch_tokens)
        else:
            rest_sums = pooled.message_sums[pooled.sentence_message] - pooled.sentence_sums
            rest_counts = pooled.message_counts[pooled.sentence_message] - pooled.sentence_counts
            without = self._head(rest_sums, rest_counts)
            # A message of one sentence has no remainder: its sentence moves the score by nothing measurable.
            without = torch.where(rest_counts > 0, without, scores[pooled.sentence_message])
        distances = self._distances(pooled)
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

    def _head(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Pooled sums → scores 0-100 (float64, so that batching cannot move a score by rounding)."""
        with torch.inference_mode():
            pooled = sums / counts.clamp(min=1.0).unsqueeze(-1)
            weight = self.net.head.weight.double()
            logits = pooled @ weight.T + self.net.head.bias.double()
            slope, intercept = self.engine.logit_fit
            return (torch.sigmoid(logits.squeeze(-1) * slope + intercept) * 100.0).clamp(0.0, 100.0)

    def _pool(
        self,
        encoded: list[EncodedMessage],
        batch_tokens: int,
        progress: Callable[[int], None] | None = None,
    ) -> _Pooled:
        hidden = self.net.head.in_features
        offsets = np.cumsum([0] + [len(m.sentences) for m in encoded])
        n_sentences = int(offsets[-1])
        pooled = _Pooled(
            torch.zeros(len(encoded), hidden, dtype=torch.float64),
            torch.zeros(len(encoded), dtype=torch.float64),
            torch.zeros(n_sentences, hidden, dtype=torch.float64),
            torch.zeros(n_sentences, dtype=torch.float64),
            torch.tensor([i for i, m in enumerate(encoded) for _ in m.sentences], dtype=torch.long),
        )
        windows = [w for m in encoded for w in m.windows]
        remaining = [len(m.windows) for m in encoded]
        with torch.inference_mode():
            for batch in _length_sorted_batches(windows, batch_tokens):
                self._accumulate(batch, offsets, pooled)
                if progress is not None:
                    done = 0
                    for window in batch:
                        remaining[window.message] -= 1
                        done += remaining[window.message] == 0
                    progress(done)
        return pooled

    def _accumulate(self, windows: list[Window], offsets: np.ndarray, pooled: _Pooled) -> None:
        batch = collate_windows(windows, *self._special)
        states = self.engine.token_states(batch.input_ids, batch.attention_mask)  # (windows, tokens, hidden)
        keep = batch.pool_mask > 0  # (windows, tokens)
        token_states = states[keep].double()  # (content tokens, hidden); specials and padding never widened
        token_message = batch.window_message.unsqueeze(1).expand_as(keep)[keep]
        token_sentence = batch.token_sentences[keep] + torch.as_tensor(offsets, dtype=torch.long)[token_message]
        ones = torch.ones(len(token_states), dtype=torch.float64)
        pooled.message_sums.index_add_(0, token_message, token_states)
        pooled.message_counts.index_add_(0, token_message, ones)
        pooled.sentence_sums.index_add_(0, token_sentence, token_states)
        pooled.sentence_counts.index_add_(0, token_sentence, ones)

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
            rest = [variants[i] for i in scorable]
            pooled = self._pool(encode_messages(self.tokenizer, rest, self.max_tokens), batch_tokens)
            without[torch.tensor(scorable)] = self._head(pooled.message_sums, pooled.message_counts)
        return without


def _length_sorted_batches(windows: list[Window], batch_tokens: int) -> list[list[Window]]:
    """Group windows of similar length so that little compute goes to padding; each batch stays under budget."""
    ordered = sorted(windows, key=lambda w: len(w.token_ids))
    batches: list[list[Window]] = []
    for window in ordered:
        width = len(window.token_ids) + 2
        if batches and (len(batches[-1]) + 1) * width <= batch_tokens:
            batches[-1].append(window)
        else:
            batches.append([window])
    return batches


def _mean_embeddings(pooled: _Pooled) -> np.ndarray:
    """(messages, hidden): the mean of each message's content-token states, the head's input."""
    return (pooled.message_sums / pooled.message_counts.clamp(min=1.0).unsqueeze(-1)).numpy()


def _round(value: float | torch.Tensor) -> float:
    return round(float(value), 4)
