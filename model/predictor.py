"""The Predictor: a version's network behind an engine, reading texts in windows → scores, embeddings, distances.

It scores and explains nothing else; ``model.scorer.Scorer`` builds the explanation (calibrated interval, band,
markers, sentence contributions) on top of it. Callers that want scores only (training's evaluation, the baselines,
the bench) use a Predictor directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.artifacts import verify_manifest
from model.encoding import EncodedMessage, Window, WindowBatch, collate_windows, encode_messages
from model.engines.export import onnx_files, onnx_paths
from model.engines.parity import prepared_verdict, serving_engine
from model.engines.runtime import ENGINES, Engine, OnnxEngine, TorchEngine
from model.errors import check_text
from model.neighbours import Neighbours
from model.network import EffusivenessNet, NetworkConfig, load_head, load_network, pool, tokenizer_folder
from model.tokens import Tokenizer, WordPieces

DEFAULT_BATCH_TOKENS = 2048  # padded tokens per encoder call: larger calls spill the CPU caches and run ~1.4x slower


@dataclass
class Pooled:
    """Per-message and per-sentence sums of content-token states, from one pass over all windows (float64)."""

    message_sums: torch.Tensor  # (messages, hidden)
    message_counts: torch.Tensor  # (messages,)
    sentence_sums: torch.Tensor  # (sentences, hidden), sentences of all messages concatenated
    sentence_counts: torch.Tensor  # (sentences,)
    sentence_message: torch.Tensor  # (sentences,) owning message of each sentence

    def embeddings(self) -> np.ndarray:
        """(messages, hidden): the mean of each message's content-token states, the head's input."""
        return (self.message_sums / self.message_counts.clamp(min=1.0).unsqueeze(-1)).numpy()


class Predictor:
    """Scores 0-100 (and distances to the training data) of diplomatic messages; no explanation.

    >>> Predictor.from_pretrained("var/models/2026-11-29-lora-3f9a2c").predict(["Dear friend!"])  # doctest: +SKIP
    array([71.3])
    """

    def __init__(
        self,
        net: EffusivenessNet,
        tokenizer: Tokenizer,
        config: NetworkConfig,
        engine: Engine | None = None,
        neighbours: Neighbours | None = None,
        version: str = "unsaved",
    ) -> None:
        self.net = net.eval()
        self.engine: Engine = engine or TorchEngine(net)
        self.engine_report: dict[str, Any] = {"engine": self.engine.name}
        self.tokenizer = tokenizer
        self.config = config
        self.neighbours = neighbours
        self.version = version
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
    ) -> Predictor:
        """Load a version folder after checking every file against its manifest (``ArtifactCorrupt`` if not).

        ``engine`` picks the encoder: "torch" (the reference), "onnx-fp32" or "onnx-int8" (exported once and cached
        in the version's folder). With ``parity_texts`` an ONNX engine must agree with the reference on them or it is
        refused for the next engine down (``model.engines.parity.serving_engine``; the verdict is in
        ``engine_report``). ``calibration_texts`` (other texts than the parity ones) set the int8 smoothing scales
        and logit correction at export.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; found {engine!r}")
        folder = Path(folder)
        manifest = verify_manifest(folder)
        net, tokenizer, config = load_network(folder)
        version = str(manifest.get("version") or folder.name)
        predictor = cls(net, tokenizer, config, neighbours=Neighbours.load(folder), version=version)
        if engine != "torch":
            paths = onnx_files(folder, net, predictor.window_batches(list(calibration_texts or [])))
            texts = list(parity_texts or [])
            predictor.engine, predictor.engine_report = serving_engine(
                paths, engine, predictor.engine, predictor.predict_with, texts, threads
            )
        return predictor

    @classmethod
    def from_prepared(
        cls, folder: str | Path, *, engine: str = "onnx-int8", threads: int | None = None
    ) -> Predictor | None:
        """Load a version whose ``engine`` is already prepared (its ONNX files and a passed parity verdict cached in
        its folder, ``model.engines.parity.prepared_verdict``) without its torch encoder or transformers: the head, the
        ``tokenizer.json`` and the ONNX session. None if it is not prepared; ``from_pretrained`` then does the work.

        What a cold ``diplotone score`` takes: about a second less import and no LoRA merge.
        """
        folder = Path(folder)
        manifest = verify_manifest(folder)
        verdict = prepared_verdict(folder, engine)
        if verdict is None:
            return None
        net, config = load_head(folder)
        chosen = verdict["engine"]
        predictor = cls(
            net,
            WordPieces(tokenizer_folder(folder, config)),
            config,
            engine=OnnxEngine(onnx_paths(folder)[chosen], chosen, threads),
            neighbours=Neighbours.load(folder),
            version=str(manifest.get("version") or folder.name),
        )
        predictor.engine_report = {**verdict, "from_cache": True}
        return predictor

    @property
    def max_tokens(self) -> int:
        return self.config.max_tokens

    def encode(self, texts: Sequence[str]) -> list[EncodedMessage]:
        """Tokenize ``texts`` and cut them into this model's sentence-aligned windows."""
        return encode_messages(self.tokenizer, texts, self.max_tokens)

    def window_batches(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> list[WindowBatch]:
        """The padded batches of windows that scoring ``texts`` feeds the encoder."""
        if not texts:
            return []
        windows = [w for m in self.encode(texts) for w in m.windows]
        return [collate_windows(b, *self._special) for b in _length_sorted_batches(windows, batch_tokens)]

    def predict(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        """Scores, shape (len(texts),).

        >>> predictor.predict(["Excellency, please accept my congratulations."])  # doctest: +SKIP
        array([27.4])
        """
        return self.predict_with_distance(texts, batch_tokens)[0]

    def predict_with(self, engine: Engine, texts: Sequence[str]) -> np.ndarray:
        """Scores of ``texts`` with another encoder engine (the parity check's view)."""
        return Predictor(self.net, self.tokenizer, self.config, engine).predict(texts)

    def predict_with_distance(
        self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and distances to the training data, each shape (len(texts),); distances None without neighbours."""
        for text in texts:
            check_text(text)
        if not texts:
            return np.zeros(0), (np.zeros(0) if self.neighbours else None)
        pooled = self.pool(self.encode(texts), batch_tokens)
        return self.scores(pooled.message_sums, pooled.message_counts).numpy(), self.distances(pooled)

    def embed(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        """Mean-pooled encoder embeddings, shape (len(texts), hidden): the input of the head."""
        return self.pool(self.encode(texts), batch_tokens).embeddings()

    def distances(self, pooled: Pooled) -> np.ndarray | None:
        """(messages,) mean cosine distances to the nearest training messages; None without neighbours."""
        return None if self.neighbours is None else self.neighbours.distances(pooled.embeddings())

    def scores(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(n, hidden) pooled sums and (n,) counts → (n,) scores 0-100, float64, through the engine's logit fit."""
        with torch.inference_mode():
            slope, intercept = self.engine.logit_fit
            return (torch.sigmoid(self.net.logits(sums, counts) * slope + intercept) * 100.0).clamp(0.0, 100.0)

    def pool(
        self,
        encoded: list[EncodedMessage],
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        progress: Callable[[int], None] | None = None,
    ) -> Pooled:
        """Encode every window once and sum its content-token states per message and per sentence.

        ``progress`` is called after each encoder batch with the number of messages it completed.
        """
        hidden = self.net.head.in_features
        offsets = torch.as_tensor(np.cumsum([0] + [len(m.sentences) for m in encoded]), dtype=torch.long)
        n_sentences = int(offsets[-1])
        pooled = Pooled(
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
                self._accumulate(collate_windows(batch, *self._special), offsets, pooled)
                if progress is not None:
                    done = 0
                    for window in batch:
                        remaining[window.message] -= 1
                        done += remaining[window.message] == 0
                    progress(done)
        return pooled

    def _accumulate(self, batch: WindowBatch, offsets: torch.Tensor, pooled: Pooled) -> None:
        states = self.engine.token_states(batch.input_ids, batch.attention_mask)  # (windows, tokens, hidden)
        message = batch.window_message.unsqueeze(1).expand_as(batch.pool_mask)  # (windows, tokens)
        sentence = batch.token_sentences.clamp(min=0) + offsets[message]  # (windows, tokens), global sentence index
        for (sums, counts), group, n in (
            ((pooled.message_sums, pooled.message_counts), message, len(pooled.message_sums)),
            ((pooled.sentence_sums, pooled.sentence_counts), sentence, len(pooled.sentence_sums)),
        ):
            batch_sums, batch_counts = pool(states, batch.pool_mask, group, n, torch.float64)
            sums += batch_sums
            counts += batch_counts


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
