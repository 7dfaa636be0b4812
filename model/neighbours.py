"""How far a text lies from the training data: mean cosine distance to its nearest training messages.

A version keeps the unit-length embeddings of its training messages (``neighbours.npy``, float16: about 0.8 KB a
message) so that each result can say whether its text is unlike what the model learned from, and the interval can
widen with it (``model/calibration.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NEIGHBOURS = "neighbours.npy"
K = 8  # nearest training messages averaged: one near-duplicate alone should not make a text look familiar


class Neighbours:
    """Unit-length training embeddings, shape (messages, hidden).

    >>> train = np.eye(3)
    >>> Neighbours(train, k=1).distances(np.array([[1.0, 0.0, 0.0]]))
    array([0.])
    """

    def __init__(self, embeddings: np.ndarray, k: int = K) -> None:
        if embeddings.ndim != 2 or len(embeddings) == 0:
            raise ValueError(f"expected a (messages, hidden) matrix of embeddings; found shape {embeddings.shape}")
        self.embeddings = _unit(np.asarray(embeddings, dtype=np.float32))
        self.k = min(k, len(self.embeddings))

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Mean cosine distance of each row of ``embeddings`` (texts, hidden) to its ``k`` nearest, shape (texts,)."""
        similarity = _unit(np.asarray(embeddings, dtype=np.float32)) @ self.embeddings.T  # (texts, train)
        nearest = -np.partition(-similarity, self.k - 1, axis=1)[:, : self.k]
        distances: np.ndarray = np.clip(1.0 - nearest.mean(axis=1), 0.0, 2.0).astype(float)
        return distances

    def save(self, folder: Path) -> None:
        np.save(folder / NEIGHBOURS, self.embeddings.astype(np.float16))

    @classmethod
    def load(cls, folder: Path) -> Neighbours | None:
        path = folder / NEIGHBOURS
        return cls(np.load(path).astype(np.float32)) if path.exists() else None


def _unit(matrix: np.ndarray) -> np.ndarray:
    unit: np.ndarray = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return unit
