"""Baselines, run through the same evaluation as the model: a marker lexicon, VADER, frozen MiniLM + ridge.

Each maps its raw signal to the 0-100 scale with a regression fitted on the train split only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.linear_model import RidgeCV
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from model.base import base_ref
from model.markers import MARKER_KINDS, count_markers, find_markers
from model.network import NetworkConfig, build_network
from model.predictor import Predictor
from model.text import words
from training.corpus import Corpus
from training.evaluation import Predict, split_arrays

Features = Callable[[Sequence[str]], np.ndarray]


def marker_features(texts: Sequence[str]) -> np.ndarray:
    """Markers per 100 words for each kind, plus log length: (texts, kinds + 1)."""
    rows = []
    for text in texts:
        counts = count_markers(find_markers(text))
        n = max(len(words(text)), 1)
        rows.append([100.0 * counts[kind] / n for kind in MARKER_KINDS] + [np.log(n)])
    return np.asarray(rows)


def vader_features(texts: Sequence[str]) -> np.ndarray:
    analyzer = SentimentIntensityAnalyzer()
    return np.asarray([[analyzer.polarity_scores(text)["compound"]] for text in texts])


def frozen_embedding_features(base: str | None = None, max_tokens: int = 512) -> Features:
    """Mean-pooled embeddings of the base encoder, untouched by fine-tuning."""
    config = NetworkConfig(max_tokens=max_tokens)
    net, tokenizer = build_network(base_ref(base).resolve(), config)
    return Predictor(net, tokenizer, config, version="frozen-base").embed


def fitted(corpus: Corpus, features: Features) -> Predict:
    """Ridge regression from ``features`` to the score, fitted on train with its penalty chosen by leave-one-out
    cross-validation (so each baseline gets its best shot); predictions clipped to 0-100."""
    _, texts, target = split_arrays(corpus, "train")
    regression = RidgeCV(alphas=np.logspace(-4, 4, 17)).fit(features(texts), target)
    return lambda batch: np.clip(regression.predict(features(batch)), 0.0, 100.0)


def baselines(corpus: Corpus, base: str | None = None) -> dict[str, Predict]:
    return {
        "lexicon (markers + ridge)": fitted(corpus, marker_features),
        "VADER (compound + linear)": fitted(corpus, vader_features),
        "frozen MiniLM + ridge": fitted(corpus, frozen_embedding_features(base)),
    }
