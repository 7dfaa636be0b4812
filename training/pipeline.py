"""Fine-tune, calibrate, evaluate and install a registry version; judge it with the gate (``retrain``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
import transformers
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments, set_seed

from model.artifacts import sha256_file, write_manifest
from model.base import BaseRef, base_ref
from model.contract import STORED_PREFIX, RunOutcome, RunProgress, write_progress
from model.neighbours import Neighbours
from model.network import (
    BASE,
    EffusivenessNet,
    NetworkConfig,
    build_network,
    load_network_for_training,
    save_network,
)
from model.predictor import Predictor
from model.registry import Registry
from model.scorer import Scorer
from training.args import TrainArgs
from training.baselines import baselines
from training.batches import GroupCollator, GroupDataset
from training.corpus import Corpus
from training.deletions import deletion_variants
from training.evaluation import (
    calibrate,
    estimate_splits,
    evaluate_predictions,
    evaluate_scorer,
    scores_only,
    split_arrays,
)
from training.gate import MIN_USER_TEST, gate
from training.trainer import EffusivenessTrainer, ProgressFile, validation_metrics


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path
    metrics: dict[str, Any]


def train(
    args: TrainArgs,
    corpus: Corpus,
    registry: Registry,
    progress_file: Path | None = None,
    log: Callable[[str], None] = print,
    with_baselines: bool = False,
) -> TrainResult:
    """Train a candidate on ``corpus`` and install it in ``registry`` (not activated: that is the gate's call).

    ``with_baselines`` also evaluates the baselines on the same splits and records them in ``metrics.json``, as the
    shipped default does, so that its claim to beat them travels with it.
    """
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    started = time.monotonic()
    if args.warm_start:
        net, tokenizer, config = load_network_for_training(Path(args.warm_start))
        base = BaseRef(**json.loads((Path(args.warm_start) / BASE).read_text()))
    else:
        base = base_ref(args.base)
        config = NetworkConfig(mode=args.mode, max_tokens=args.max_tokens)
        net, tokenizer = build_network(base.resolve(), config)
        if args.mode == "lora":
            net.encoder = peft.get_peft_model(net.encoder, _lora_config(args, net))
    records = {split: corpus.split(split).to_list() for split in ("train", "validation")}
    if args.warm_start:
        records["train"] = _labelled_and_replayed(records["train"], args.replay, args.seed)
        log(f"warm start from {Path(args.warm_start).name}: the labelled messages plus {args.replay} replayed groups")
    pairs: dict[str, list[dict[str, Any]]] = {split: list(corpus.pairs) for split in records}
    if args.deletion_pairs:
        variants, deletion = deletion_variants(records["train"])
        records["train"] += variants
        pairs["train"] += [p | {"margin": args.deletion_margin} for p in deletion]
        log(f"{len(deletion)} deletion pairs join the ranking loss")
    datasets = {
        split: GroupDataset(rows, pairs[split], tokenizer, config.max_tokens) for split, rows in records.items()
    }
    if args.user_weight > 1:
        repeated = datasets["train"].repeat(STORED_PREFIX, args.user_weight)
        log(f"{repeated} groups labelled in the service count {args.user_weight} times")
    log(
        f"training on {len(records['train'])} messages ({len(datasets['train'])} groups), "
        f"validating on {len(records['validation'])}"
    )

    with tempfile.TemporaryDirectory(prefix="diplotone-train-") as scratch:
        trainer = _trainer(args, net, datasets, GroupCollator(tokenizer), Path(scratch), progress_file)
        trainer.train()
    net.eval()
    if progress_file is not None:
        write_progress(progress_file, RunProgress("evaluating", trainer.state.global_step, trainer.state.max_steps))

    with tempfile.TemporaryDirectory(prefix="diplotone-version-") as staging_name:
        staging = Path(staging_name)
        save_network(net, tokenizer, staging, config, base)
        live = Predictor(net, tokenizer, config, version="candidate")
        live.neighbours = Neighbours(live.embed(split_arrays(corpus, "train")[1]))
        live.neighbours.save(staging)
        estimates = estimate_splits(corpus, live.predict_with_distance, _evaluated_splits(corpus))
        calibration = calibrate(corpus, estimates, args.coverage)
        calibration.save(staging)
        metrics: dict[str, Any] = dict(evaluate_predictions(corpus, estimates, calibration, by="kind"))
        metrics["data_sha256"] = corpus.sha256
        metrics["test_sha256"] = corpus.split_sha256("test")
        if with_baselines:
            log("evaluating the baselines")
            metrics["baselines"] = {
                name: evaluate_scorer(corpus, scores_only(predict), args.coverage)
                for name, predict in baselines(corpus, args.base).items()
            }
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (staging / "training_args.json").write_text(
            json.dumps(_provenance(args, corpus, trainer, started), indent=2) + "\n"
        )
        version = _version_name(args, staging)
        write_manifest(staging, {"version": version, "created": _now(), "data_sha256": corpus.sha256})
        _check_round_trip(staging, estimates["test"][0], split_arrays(corpus, "test")[1])
        path = registry.install(staging, version)
    log(f"version {version}: test {_brief(metrics['test'])}")
    return TrainResult(version, path, metrics)


def _lora_config(args: TrainArgs, net: EffusivenessNet) -> peft.LoraConfig:
    encoder: Any = net.encoder
    layers = int(encoder.config.num_hidden_layers)
    return peft.LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_targets,
        layers_to_transform=list(range(max(0, layers - args.lora_top_layers), layers)),
    )


def _labelled_and_replayed(train: list[dict[str, Any]], replay: int, seed: int) -> list[dict[str, Any]]:
    """A warm start's training set: every message labelled in the service, plus ``replay`` corpus groups at random."""
    labelled = [r for r in train if r["id"].startswith(STORED_PREFIX)]
    groups = sorted({r["group"] for r in train if not r["id"].startswith(STORED_PREFIX)})
    chosen = set(random.Random(seed).sample(groups, min(replay, len(groups))))
    return labelled + [r for r in train if not r["id"].startswith(STORED_PREFIX) and r["group"] in chosen]


def _trainer(
    args: TrainArgs,
    net: EffusivenessNet,
    datasets: dict[str, GroupDataset],
    collator: GroupCollator,
    scratch: Path,
    progress_file: Path | None,
) -> EffusivenessTrainer:
    steps_per_epoch = -(-len(datasets["train"]) // args.batch_groups)
    total = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.epochs
    training_args = TrainingArguments(
        output_dir=str(scratch),
        per_device_train_batch_size=args.batch_groups,
        per_device_eval_batch_size=args.batch_groups * 4,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=int(total * args.warmup_fraction),
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="spearman",
        greater_is_better=True,
        logging_steps=max(1, steps_per_epoch // 4),
        label_names=["labels"],
        remove_unused_columns=False,
        use_cpu=True,
        seed=args.seed,
        data_seed=args.seed,
        report_to="none",
        dataloader_num_workers=0,
        save_only_model=True,
        disable_tqdm=False,
    )
    callbacks: list[TrainerCallback] = [EarlyStoppingCallback(early_stopping_patience=args.patience)]
    if progress_file is not None:
        callbacks.append(ProgressFile(progress_file))
    return EffusivenessTrainer(
        model=net,
        args=training_args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=collator,
        compute_metrics=validation_metrics,
        callbacks=callbacks,
        optimizers=(_optimizer(net, args), None),
        pair_margin=args.pair_margin,
        pair_weight=args.pair_weight,
    )


def _optimizer(net: EffusivenessNet, args: TrainArgs) -> torch.optim.Optimizer:
    # The head starts from random and learns faster than the adapter that nudges a pretrained encoder.
    encoder = [p for p in net.encoder.parameters() if p.requires_grad]
    groups = [
        {"params": encoder, "lr": args.learning_rate, "weight_decay": args.weight_decay},
        {"params": list(net.head.parameters()), "lr": args.head_learning_rate, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups)


def _check_round_trip(folder: Path, expected: np.ndarray, texts: list[str]) -> None:
    """The saved version, loaded through the production loader, must score as the model that was evaluated."""
    loaded = Predictor.from_pretrained(folder).predict(texts)
    drift = float(np.max(np.abs(loaded - expected))) if len(texts) else 0.0
    if drift > 1e-3:
        raise RuntimeError(f"saved model scores differ from the trained one by up to {drift:.5f} points")


def _provenance(args: TrainArgs, corpus: Corpus, trainer: EffusivenessTrainer, started: float) -> dict[str, Any]:
    state = trainer.state
    return {
        "args": args.to_dict(),
        "data_sha256": corpus.sha256,
        "messages": {split: len(corpus.split(split)) for split in ("train", "validation", "test")},
        "pairs": len(corpus.pairs),
        "steps": state.global_step,
        "epochs_run": state.epoch,
        "best_validation_spearman": state.best_metric,
        "loss_history": [[entry["step"], entry["loss"]] for entry in state.log_history if "loss" in entry],
        "train_seconds": round(time.monotonic() - started, 1),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }


def _version_name(args: TrainArgs, staging: Path) -> str:
    weights = sorted(p for p in staging.rglob("*.safetensors"))
    digest = "".join(sha256_file(p) for p in weights)
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d}-{args.mode}-{hashlib.sha256(digest.encode()).hexdigest()[:6]}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _brief(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if k in ("spearman", "pairwise_accuracy", "mae"))


def retrain(
    args: TrainArgs,
    corpus: Corpus,
    registry: Registry,
    progress_file: Path | None = None,
    log: Callable[[str], None] = print,
) -> RunOutcome:
    """Train a candidate, install it, and judge it with the gate against the active version; never activate it.

    Whoever asked decides what a pass means: the service loads, probes and serves the candidate (``ModelSwitch``);
    ``diplotone train`` points the registry at it.
    """
    active = registry.active_version()
    result = train(args, corpus, registry, progress_file, log)
    active_test = _test_figures(registry, active, corpus, log) if active else None
    active_user = _user_figures(registry, active, corpus) if active and "user_test" in result.metrics else None
    decision = gate(result.metrics["test"], active_test, result.metrics.get("user_test"), active_user)
    return RunOutcome(
        result.version, decision.promote, active, decision.reasons, result.metrics, previous_user_test=active_user
    )


def _evaluated_splits(corpus: Corpus) -> tuple[str, ...]:
    """Validation and test, and the share of the service's labels held out (``user_test``) when it can be judged."""
    user = len(corpus.split("user_test"))
    return ("validation", "test", "user_test") if user >= MIN_USER_TEST else ("validation", "test")


def _user_figures(registry: Registry, version: str, corpus: Corpus) -> dict[str, Any]:
    """The figures of ``version`` on the share of the service's labels held out: they change with every new label, so
    the active version is always evaluated again."""
    scorer = Scorer.from_pretrained(registry.path(version))
    estimates = estimate_splits(corpus, scorer.predict_with_distance, ("user_test",))
    return dict(evaluate_predictions(corpus, estimates, scorer.calibration)["user_test"])


def _test_figures(registry: Registry, version: str, corpus: Corpus, log: Callable[[str], None]) -> dict[str, Any]:
    """The test figures of ``version`` on this corpus's test split, for the gate to compare like with like.

    A version's ``metrics.json`` holds figures on the test split it was trained against. When the corpus's test split
    has changed since (``test_sha256`` differs), the version is evaluated again. Versions written before the
    fingerprint was recorded are taken at their word.
    """
    metrics = json.loads((registry.path(version) / "metrics.json").read_text())
    recorded = metrics.get("test_sha256")
    if recorded is None or recorded == corpus.split_sha256("test"):
        return dict(metrics["test"])
    log(f"{version} was evaluated on another test split; evaluating it on the current one")
    scorer = Scorer.from_pretrained(registry.path(version))
    estimates = estimate_splits(corpus, scorer.predict_with_distance, ("test",))
    return dict(evaluate_predictions(corpus, estimates, scorer.calibration)["test"])


def ship(result: TrainResult, shipped: Path) -> Path:
    """Make ``result`` the one version committed with the code (``model/shipped/``)."""
    shipped.mkdir(parents=True, exist_ok=True)
    for old in shipped.iterdir():
        if old.is_dir():
            shutil.rmtree(old)
    target = shipped / result.version
    shutil.copytree(result.path, target)
    return target
