"""Fit a version's interval again on the current corpus, without retraining: ``python -m training.recalibrate FOLDER``.

For when the calibration method changes (as it did when intervals became Mondrian by surface form) or the validation
split grows. The weights are untouched; ``calibration.json`` and the figures in ``metrics.json`` are rewritten and the
manifest re-recorded, so the version's ONNX cache (keyed by the manifest) is rebuilt on its next load.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from model.artifacts import MANIFEST, write_manifest
from model.contract import CORPUS_DIR
from model.scorer import Scorer
from training.corpus import load_corpus
from training.evaluation import calibrate, estimate_splits, evaluate_predictions


def recalibrate(folder: Path, data_dir: Path = CORPUS_DIR, coverage: float | None = None) -> dict[str, object]:
    """Re-fit and save the calibration of the version in ``folder``; return its new metrics."""
    corpus = load_corpus(data_dir)
    scorer = Scorer.from_pretrained(folder)
    estimates = estimate_splits(corpus, scorer.predict_with_distance)
    calibration = calibrate(corpus, estimates, coverage or scorer.calibration.coverage)
    calibration.save(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(evaluate_predictions(corpus, estimates, calibration, by="kind"))
    metrics["data_sha256"], metrics["test_sha256"] = corpus.sha256, corpus.split_sha256("test")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    recorded = {k: v for k, v in json.loads((folder / MANIFEST).read_text()).items() if k != "files"}
    write_manifest(folder, {**recorded, "recalibrated": datetime.now(UTC).isoformat(timespec="seconds")})
    return dict(metrics)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m training.recalibrate VERSION_FOLDER", file=sys.stderr)
        return 2
    metrics = recalibrate(Path(argv[0]))
    for split in ("validation", "test"):
        figures = metrics[split]
        assert isinstance(figures, dict)
        print(f"{split}: coverage {figures['interval_coverage']:.3f}, mean width {figures['interval_width']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
