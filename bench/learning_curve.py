"""How fast the service learns from its users' labels: label N messages of a form the corpus lacks, retrain through
the API, and score the rest of that form.

    python -m bench.learning_curve                          # 25, 50 and 100 labels, user_weight 1, warm start
    python -m bench.learning_curve --labels 100 --weights 1 3 --full   # also the full recipe beside the warm start

Each trial is a fresh service (SQLite in a temporary folder, the shipped model active) driven over its HTTP API as a
user would: POST the messages, PUT a label on each, POST /v1/training-runs with an admin key, wait for the run, and
read which version serves. The pool (``bench/data/learning_curve_toasts.jsonl``: 170 banquet toasts and press
remarks composed for this, a form the corpus does not hold) is shuffled once with a fixed seed; the first N are
labelled (so 25 ⊂ 50 ⊂ 100) and the last ``--evaluate`` are scored by the version that serves after the run, beside
the version that served before. Writes ``bench/results/learning_curve.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from scipy.stats import spearmanr

from bench.__main__ import RESULTS, shipped_version
from model.registry import Registry
from model.scorer import Scorer
from service.app import create_app
from service.keys import create_key
from service.settings import Settings

POOL = Path(__file__).resolve().parent / "data" / "learning_curve_toasts.jsonl"
RUN_TIMEOUT_S = 3600


def trial(pool: list[dict[str, Any]], labelled: int, evaluate: int, weight: int, warm: bool) -> dict[str, Any]:
    """One fresh service: label the first ``labelled`` pool messages, retrain, score the last ``evaluate``."""
    with tempfile.TemporaryDirectory(prefix="diplotone-curve-") as scratch:
        data_dir = Path(scratch)
        shipped = shipped_version()
        registry = Registry(data_dir / "models")
        registry.install(shipped, shipped.name)
        registry.activate(shipped.name)
        settings = Settings(
            data_dir=data_dir,
            engine="torch",
            training_threads=2,
            training_warm_start=warm,
            training_user_weight=weight,
        )
        app = create_app(settings)
        with TestClient(app) as client:
            with app.state.database.sessions() as session:
                label = {"Authorization": f"Bearer {create_key(session, 'label', 'curve').token}"}
                admin = {"Authorization": f"Bearer {create_key(session, 'admin', 'curve').token}"}
            fields = ("text", "sender", "recipient", "date", "occasion")
            body = {"messages": [{k: m[k] for k in fields} for m in pool[:labelled]]}
            stored = client.post("/v1/messages", json=body, headers=label)
            stored.raise_for_status()
            for message, record in zip(stored.json()["messages"], pool, strict=False):
                answer = client.put(
                    f"/v1/messages/{message['id']}/label",
                    json={"annotator": "curve", "score": record["score"]},
                    headers=label,
                )
                answer.raise_for_status()
            started = time.monotonic()
            run = client.post("/v1/training-runs", headers=admin)
            run.raise_for_status()
            app.state.training_jobs.wait(RUN_TIMEOUT_S)
            outcome = client.get(run.headers["location"]).json()
            seconds = time.monotonic() - started
        held_out = pool[-evaluate:]
        texts, truth = [m["text"] for m in held_out], np.asarray([m["score"] for m in held_out], dtype=float)
        before = Scorer.from_pretrained(registry.path(shipped.name)).predict(texts)
        after = Scorer.from_pretrained(registry.path(str(registry.active_version()))).predict(texts)
        candidate = outcome.get("candidate_version")  # judged on the form even when the gate refused it
        tried = Scorer.from_pretrained(registry.path(candidate)).predict(texts) if candidate else before
    return {
        "labelled": labelled,
        "user_weight": weight,
        "recipe": "warm start" if warm else "full",
        "run_seconds": round(seconds, 1),
        "status": outcome["status"],
        "reasons": outcome.get("reasons"),
        "user_test": (outcome.get("metrics") or {}).get("user_test"),
        "test_pairwise": ((outcome.get("metrics") or {}).get("test") or {}).get("pairwise_accuracy"),
        "before": _figures(before, truth),
        "after": _figures(after, truth),
        "candidate": _figures(tried, truth),
    }


def _figures(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "spearman": round(float(spearmanr(predicted, truth).statistic), 4),
        "mae": round(float(np.mean(np.abs(predicted - truth))), 2),
        "mean_error": round(float(np.mean(predicted - truth)), 2),
    }


def report(rows: list[dict[str, Any]], evaluate: int) -> str:
    lines = [
        f"# Learning curve: banquet toasts, {evaluate} held-out messages of the form scored after each run",
        "",
        "| labels | weight | recipe | run | status | Spearman before → candidate | MAE before → candidate | bias "
        "before → candidate | test pairs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, c = r["before"], r["candidate"]
        lines.append(
            f"| {r['labelled']} | {r['user_weight']} | {r['recipe']} | {r['run_seconds'] / 60:.1f} min | {r['status']} "
            f"| {b['spearman']:.3f} → {c['spearman']:.3f} | {b['mae']:.1f} → {c['mae']:.1f} "
            f"| {b['mean_error']:+.1f} → {c['mean_error']:+.1f} | {_cell(r['test_pairwise'])} |"
        )
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.learning_curve", description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--weights", type=int, nargs="+", default=[1])
    parser.add_argument("--evaluate", type=int, default=70, help="pool messages held out and scored after each run")
    parser.add_argument("--full", action="store_true", help="also run the full recipe (about 20 minutes a run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    pool = [json.loads(line) for line in POOL.read_text().splitlines() if line.strip()]
    random.Random(7).shuffle(pool)
    if max(args.labels) + args.evaluate > len(pool):
        raise SystemExit(
            f"--labels and --evaluate need {max(args.labels) + args.evaluate} messages; the pool has {len(pool)}"
        )
    rows = []
    for warm in [True, False] if args.full else [True]:
        for weight in args.weights:
            for labelled in args.labels:
                rows.append(trial(pool, labelled, args.evaluate, weight, warm))
                print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "learning_curve.md").write_text(report(rows, args.evaluate))
    print(report(rows, args.evaluate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
