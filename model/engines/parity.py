"""Whether an ONNX engine may serve: its scores beside the reference's on the parity texts, the tolerances, the
verdicts cached beside the ONNX files, and the policy that picks the serving engine from them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.engines.export import _private
from model.engines.runtime import ENGINES, STAMP, Engine, OnnxEngine

log = logging.getLogger("diplotone.engines")
FP32_TOLERANCE = 0.1  # score points between ONNX fp32 and torch, on every parity text
INT8_MIN_SPEARMAN = 0.995  # int8 against fp32, over the parity texts
INT8_TOLERANCE = 2.0  # score points between int8 and fp32, on every parity text
Predict = Callable[[Engine, Sequence[str]], np.ndarray]  # an engine's scores (0-100) of texts, shape (texts,)


def serving_engine(
    paths: dict[str, Path],
    wanted: str,
    reference: Engine,
    predict: Predict,
    texts: Sequence[str],
    threads: int | None = None,
) -> tuple[Engine, dict[str, Any]]:
    """The engine that serves and the report of how it was chosen (the service shows it in /v1/info).

    ``wanted`` serves if it agrees with the engine above it on ``texts`` — ONNX fp32 within ``FP32_TOLERANCE`` points
    of the ``reference`` (torch) everywhere; int8 with Spearman ≥ ``INT8_MIN_SPEARMAN`` against fp32 and no score
    more than ``INT8_TOLERANCE`` points off — else the next one down does (fp32, then torch), the reason logged and
    kept in the report under ``refused``. Without texts ``wanted`` serves unchecked. A verdict is cached beside the
    ONNX files (``ParityCache``), so a restart skips the check.
    """
    verdicts = ParityCache(next(iter(paths.values())).parent, texts)
    cached = verdicts.get(wanted) if texts else None
    report = (
        {**cached, "from_cache": True} if cached else check_parity(paths, wanted, reference, predict, texts, threads)
    )
    if texts and not cached:
        verdicts.put(wanted, report)
    if "refused" in report:
        refused, reason = next(iter(report["refused"].items()))
        log.warning("engine %s refused: %s; serving with %s", refused, reason, report["engine"])
    chosen = report["engine"]
    return (reference if chosen == reference.name else OnnxEngine(paths[chosen], chosen, threads)), report


def check_parity(
    paths: dict[str, Path],
    wanted: str,
    reference: Engine,
    predict: Predict,
    texts: Sequence[str],
    threads: int | None = None,
) -> dict[str, Any]:
    """Which engine may serve: ``wanted``, or the next one down (fp32, then torch), with the refusal's reason."""
    report: dict[str, Any] = {"requested": wanted, "parity_texts": len(texts), "engine": wanted}
    if not texts:
        return report
    fp32_scores = predict(OnnxEngine(paths["onnx-fp32"], "onnx-fp32", threads), texts)
    report["onnx-fp32"] = gap = parity(predict(reference, texts), fp32_scores)
    if gap["max_abs_diff"] > FP32_TOLERANCE:
        reason = f"differs from torch by up to {gap['max_abs_diff']:.3f} points (> {FP32_TOLERANCE})"
        return {**report, "engine": reference.name, "refused": {"onnx-fp32": reason}}
    if wanted == "onnx-int8":
        int8 = OnnxEngine(paths["onnx-int8"], "onnx-int8", threads)
        report["onnx-int8"] = check = parity(fp32_scores, predict(int8, texts))
        if check["spearman"] < INT8_MIN_SPEARMAN or check["max_abs_diff"] > INT8_TOLERANCE:
            reason = (
                f"Spearman {check['spearman']:.4f} against fp32 (needs ≥ {INT8_MIN_SPEARMAN}), "
                f"largest gap {check['max_abs_diff']:.2f} points (allowed {INT8_TOLERANCE})"
            )
            return {**report, "engine": "onnx-fp32", "refused": {"onnx-int8": reason}}
    return report


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """How far an engine's scores are from the reference engine's, on the same texts."""
    from scipy.stats import spearmanr

    gap = np.abs(np.asarray(reference) - np.asarray(candidate))
    rho = float(spearmanr(reference, candidate).statistic) if len(reference) > 2 else 1.0
    return {"max_abs_diff": float(gap.max()) if len(gap) else 0.0, "spearman": rho, "n": len(gap)}


def prepared_verdict(folder: Path, wanted: str) -> dict[str, Any] | None:
    """The cached verdict for ``wanted`` on the version in ``folder``, whatever parity texts it was checked on, if
    its ONNX files are this recipe's export of this manifest and the verdict picked an ONNX engine; else None.

    For a one-shot process (``diplotone score``) that has no parity texts of its own: the service or the training
    run that prepared the version checked it on the corpus test split.
    """
    from model.engines.export import exported

    if not exported(folder):
        return None
    cache = folder / "cache"
    stored = ParityCache(cache, [])._read()
    key, verdict = stored.get("key"), stored.get("verdicts", {}).get(wanted)
    current = json.loads((cache / STAMP).read_text())
    if not isinstance(key, dict) or key.get("onnx") != current or not isinstance(verdict, dict):
        return None
    return dict(verdict) if verdict.get("engine") in ENGINES[1:] else None


class ParityCache:
    """Parity verdicts kept beside the ONNX files, valid while those files and the parity texts are unchanged."""

    def __init__(self, cache: Path, texts: Sequence[str]) -> None:
        self.path = cache / "parity.json"
        stamp = cache / STAMP
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        self.key = {"onnx": json.loads(stamp.read_text()) if stamp.is_file() else None, "texts_sha256": digest}

    def get(self, engine: str) -> dict[str, Any] | None:
        stored = self._read()
        verdict = stored.get("verdicts", {}).get(engine) if stored.get("key") == self.key else None
        return dict(verdict) if isinstance(verdict, dict) else None

    def put(self, engine: str, verdict: dict[str, Any]) -> None:
        stored = self._read()
        verdicts = stored.get("verdicts", {}) if stored.get("key") == self.key else {}
        temporary = _private(self.path, "tmp")
        temporary.write_text(json.dumps({"key": self.key, "verdicts": {**verdicts, engine: verdict}}, indent=1))
        temporary.replace(self.path)

    def _read(self) -> dict[str, Any]:
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # absent or unreadable: the check runs again and rewrites it
        return stored if isinstance(stored, dict) else {}
