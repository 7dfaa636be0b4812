"""``python -m training``: train a candidate, install it in the registry and judge it with the gate.

The service starts this as a separate process on a snapshot file, so a crash or a memory spike in training never
takes the API down. Progress goes to ``--progress`` and the outcome (the candidate and whether it passed the gate, or
the error) to ``--outcome``, in the shapes of ``model.contract``. It never activates the candidate: the service does,
after loading and probing it. With ``--prepare-engine REQUEST.json`` (the service's ``engine_request``) a candidate
that passed the gate has its serving engine prepared here before the run ends, so serving it opens cached files.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from model.contract import CORPUS_DIR, RunOutcome, RunProgress, read_progress, write_outcome, write_progress
from model.network import CONFIG
from model.prepare_engine import prepare
from model.registry import Registry
from training.args import TrainArgs
from training.corpus import load_corpus, load_snapshot
from training.pipeline import retrain

WARM_EPOCHS = 3  # a warm start's default: it begins from a trained model, on a few hundred groups
# A warm start continues a trained adapter and head: the full recipe's rates moved it off the corpus's pairs
# (test pairwise 0.953 -> 0.92-0.93, refused by the gate in 4 runs of 6: bench.learning_curve), so it takes a fraction.
WARM_RATE_SCALE = 0.2


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        outcome = run(options)
    except Exception as error:  # the outcome file is how the service learns why; the traceback goes to stderr
        traceback.print_exc()
        _report(options.outcome, RunOutcome(error=f"{type(error).__name__}: {error}"))
        return 1
    _report(options.outcome, outcome)
    return 0


def run(options: argparse.Namespace) -> RunOutcome:
    corpus = load_snapshot(options.snapshot) if options.snapshot else load_corpus(options.data)
    overrides: dict[str, Any] = {"epochs": options.epochs} if options.epochs else {}
    if options.max_steps:
        overrides["max_steps"] = options.max_steps
    registry = Registry(options.registry)
    warm_start = _warm_start(options.warm_start, registry)
    if warm_start:
        rates = {
            "learning_rate": TrainArgs.learning_rate * WARM_RATE_SCALE,
            "head_learning_rate": TrainArgs.head_learning_rate * WARM_RATE_SCALE,
        }
        overrides = (
            {"epochs": WARM_EPOCHS} | rates | overrides | {"warm_start": str(warm_start), "replay": options.replay}
        )
    args = TrainArgs(
        base=options.base, threads=options.threads, seed=options.seed, user_weight=options.user_weight, **overrides
    )
    outcome = retrain(args, corpus, registry, options.progress)
    if options.prepare_engine and outcome.passed and outcome.version:
        _prepare_engine(registry.path(outcome.version), options.prepare_engine, options.progress)
    return outcome


def _prepare_engine(folder: Path, request_file: Path, progress: Path | None) -> None:
    """Prepare the candidate's serving engine; a failure is logged, not fatal (the service then prepares it itself,
    serving the candidate on torch meanwhile)."""
    last = read_progress(progress) if progress else None
    if progress and last:
        write_progress(progress, RunProgress("preparing", last.step, last.max_steps, last.epoch, last.loss))
    try:
        report = prepare(folder, json.loads(request_file.read_text()))
    except Exception:
        traceback.print_exc()
        print(f"preparing the engine of {folder.name} failed; the service will prepare it", file=sys.stderr)
        return
    print(f"engine prepared for {folder.name}: {json.dumps(report)}")


def _warm_start(requested: str | None, registry: Registry) -> Path | None:
    """The version to continue from: a folder, or "active" for the registry's active version when it is a LoRA one
    (with no active version, or a fully fine-tuned one, the run takes the full recipe)."""
    if requested != "active":
        return Path(requested) if requested else None
    active = registry.active_version()
    if active is None:
        return None
    folder = registry.path(active)
    config = json.loads((folder / CONFIG).read_text())
    return folder if config.get("mode") == "lora" else None


def _report(path: Path | None, outcome: RunOutcome) -> None:
    if path is None:
        print(json.dumps(asdict(outcome), indent=2))
    else:
        write_outcome(path, outcome)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, default=CORPUS_DIR, help="folder with messages.jsonl and pairs.jsonl")
    source.add_argument("--snapshot", type=Path, help="a service snapshot JSON file")
    parser.add_argument("--registry", type=Path, required=True, help="the models folder of the data directory")
    parser.add_argument("--progress", type=Path, help="JSON file updated with step, epoch, loss and ETA")
    parser.add_argument("--outcome", type=Path, help="JSON file for the outcome (stdout if absent)")
    parser.add_argument("--base", help="a local Hugging Face model folder (default: the packaged MiniLM)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--warm-start", help='continue from a LoRA version folder, or "active" for the active version')
    parser.add_argument("--replay", type=int, default=400, help="corpus groups replayed beside the labels (warm start)")
    parser.add_argument("--user-weight", type=int, default=1, help="times each service-labelled message counts")
    parser.add_argument(
        "--prepare-engine", type=Path, help="JSON request (model.prepare_engine): prepare a passed candidate's engine"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
