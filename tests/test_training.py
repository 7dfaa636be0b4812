"""The training pipeline on the tiny model: a short run learns and writes a version that loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.base import base_ref
from model.calibration import Calibration
from model.network import NetworkConfig, save_network
from model.predictor import Predictor
from model.registry import Registry
from model.scorer import Scorer
from tests.factories import COLD_SENTENCES, WARM_SENTENCES, make_tiny_network, write_tiny_corpus
from training.args import TrainArgs
from training.batches import GroupCollator, GroupDataset
from training.corpus import load_corpus, load_snapshot
from training.gate import GateDecision, gate
from training.metrics import regression_metrics
from training.pipeline import _test_figures, train


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def trained(tiny_base: Path, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    registry = Registry(tmp_path_factory.mktemp("registry"))
    args = TrainArgs(
        base=str(tiny_base),
        max_tokens=32,
        epochs=6,
        batch_groups=2,
        learning_rate=5e-3,
        head_learning_rate=2e-2,
        threads=1,
        patience=6,
    )
    return train(args, load_corpus(tiny_corpus), registry, log=lambda _: None), registry


def test_short_training_run_lowers_the_loss(trained: tuple) -> None:
    result, _ = trained
    losses = json.loads((result.path / "training_args.json").read_text())["loss_history"]
    assert len(losses) >= 4
    assert np.mean([loss for _, loss in losses[-2:]]) < np.mean([loss for _, loss in losses[:2]])


def test_trained_version_loads_and_scores_warm_above_cold(trained: tuple, tiny_corpus: Path) -> None:
    result, registry = trained
    scorer = Scorer.from_pretrained(registry.path(result.version))
    corpus = load_corpus(tiny_corpus)
    texts, scores = corpus.messages["text"], np.asarray(corpus.messages["score"])
    predicted = scorer.predict(texts)
    assert np.corrcoef(predicted, scores)[0, 1] > 0.5


def test_version_folder_holds_the_registry_files(trained: tuple) -> None:
    result, _ = trained
    names = {p.name for p in result.path.iterdir()}
    assert {
        "manifest.json",
        "metrics.json",
        "training_args.json",
        "calibration.json",
        "config.json",
        "base.json",
        "head.safetensors",
        "adapter",
        "neighbours.npy",
    } <= names
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert set(metrics) >= {"test", "validation", "data_sha256"}
    assert set(metrics["test"]) >= {
        "spearman",
        "pearson",
        "mae",
        "pairwise_accuracy",
        "band_accuracy",
        "interval_coverage",
    }
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["version"] == result.version and "head.safetensors" in manifest["files"]


def test_lora_version_is_small_beside_a_whole_encoder(trained: tuple, tmp_path: Path) -> None:
    result, _ = trained
    scorer = Scorer.from_pretrained(result.path)  # the adapter merged in: a whole encoder again
    full = tmp_path / "full"
    save_network(scorer.net, scorer.tokenizer, full, NetworkConfig(mode="full", max_tokens=32), base_ref(None))

    def weights(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))

    # The tiny encoder is ~100 kB, so a bound in bytes would pass a whole-encoder save too; the ratio does not. Rank 8
    # on a hidden size of 32 is a quarter of each adapted matrix (0.28 of the whole here); on MiniLM's 384, 1/50.
    assert weights(result.path) < weights(full) / 2


def test_training_moves_the_adapter_weights(trained: tuple, tiny_base: Path) -> None:
    result, _ = trained
    adapter = load_file(str(result.path / "adapter" / "adapter_model.safetensors"))
    b_matrices = {name: tensor for name, tensor in adapter.items() if "lora_B" in name}
    assert b_matrices, "the adapter holds no LoRA B matrix"
    # peft starts every B at zero: an untrained adapter changes nothing
    assert {name: float(t.abs().max()) > 1e-4 for name, t in b_matrices.items()} == dict.fromkeys(b_matrices, True)
    merged = Scorer.from_pretrained(result.path).net.encoder.state_dict()
    base = load_file(str(tiny_base / "model.safetensors"))
    top_query = next(name for name in sorted(merged) if name.endswith("attention.self.query.weight") and ".1." in name)
    assert not torch.allclose(merged[top_query], base[next(n for n in base if n.endswith(top_query))])


def test_training_scores_a_message_as_the_scorer_does(tiny_base: Path) -> None:
    net, tokenizer = make_tiny_network(tiny_base, adapter_std=0.5)  # as training holds it: adapter not merged
    texts = [" ".join(WARM_SENTENCES), " ".join(COLD_SENTENCES[:3]), "Dear friend."]
    records = [{"id": f"m{i}", "text": t, "score": 50.0, "group": f"g{i % 2}"} for i, t in enumerate(texts)]
    dataset = GroupDataset(records, [], tokenizer, max_tokens=16)  # the longer messages span several windows
    assert max(len(m.windows) for group in dataset.groups for m in group.messages) >= 3
    batch = GroupCollator(tokenizer)(list(dataset))
    with torch.no_grad():
        trained = net.eval()(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pool_mask=batch["pool_mask"],
            window_message=batch["window_message"],
            n_messages=len(batch["labels"]),
        )
    by_id = dict(zip(dataset.ids, (trained * 100).tolist(), strict=True))
    served = Predictor(net, tokenizer, NetworkConfig(mode="lora", max_tokens=16), version="x").predict(texts)
    assert [by_id[r["id"]] for r in records] == pytest.approx(served.tolist(), abs=1e-3)


def test_python_m_training_reports_the_gate_verdict_and_never_activates(
    tiny_base: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    outcome = tmp_path / "outcome.json"
    command = [
        sys.executable,
        "-m",
        "training",
        "--data",
        str(tiny_corpus),
        "--registry",
        str(tmp_path / "models"),
        "--outcome",
        str(outcome),
        "--progress",
        str(tmp_path / "progress.json"),
        "--base",
        str(tiny_base),
        "--max-steps",
        "2",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    result = json.loads(outcome.read_text())
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["max_steps"] == 2
    registry = Registry(tmp_path / "models")
    assert [v.version for v in registry.versions()] == [result["version"]]
    assert isinstance(result["passed"], bool)  # no active model yet: the gate judges coverage alone
    assert registry.active_version() is None  # a verdict only: activating is the caller's call


def test_snapshot_messages_without_split_never_land_in_test(tiny_corpus: Path, tmp_path: Path) -> None:
    records = [json.loads(line) for line in (tiny_corpus / "messages.jsonl").read_text().splitlines()]
    extra = [{**r, "id": f"new{i}", "group": f"new{i}", "split": None} for i, r in enumerate(records)]
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps({"messages": records + extra, "pairs": []}))
    corpus = load_snapshot(snapshot)
    new_splits = {r["split"] for r in corpus.messages if r["id"].startswith("new")}
    assert new_splits == {"train", "validation", "user_test"}  # user_test: the labels' held-out share, not test


def test_corpus_with_a_bad_score_names_the_record(tiny_corpus: Path, tmp_path: Path) -> None:
    lines = (tiny_corpus / "messages.jsonl").read_text().splitlines()
    broken = json.loads(lines[2]) | {"score": 140}
    (tmp_path / "messages.jsonl").write_text("\n".join([*lines[:2], json.dumps(broken), *lines[3:]]))
    (tmp_path / "pairs.jsonl").write_text("")
    with pytest.raises(ValueError, match="record 3: score must lie in"):
        load_corpus(tmp_path)


def test_gate_rejects_a_worse_candidate_with_reasons() -> None:
    active = {"spearman": 0.90, "pairwise_accuracy": 0.90, "interval_coverage": 0.90}
    decision = gate({"spearman": 0.85, "pairwise_accuracy": 0.95, "interval_coverage": 0.90}, active)
    assert not decision.promote
    assert decision.reasons == ["spearman 0.850 is below the active model's 0.900 by more than 0.01"]


def test_gate_promotes_a_candidate_within_tolerance() -> None:
    active = {"spearman": 0.90, "pairwise_accuracy": 0.90, "interval_coverage": 0.90}
    assert gate({"spearman": 0.895, "pairwise_accuracy": 0.89, "interval_coverage": 0.88}, active).promote


ACTIVE = {"spearman": 0.90, "pairwise_accuracy": 0.90, "interval_coverage": 0.90}


@pytest.mark.parametrize(
    ("changes", "promote"),
    [
        ({"spearman": 0.90 - 0.01}, True),  # exactly at the tolerance: noise, not a regression
        ({"spearman": 0.90 - 0.01 - 1e-6}, False),
        ({"pairwise_accuracy": 0.90 - 0.02}, True),
        ({"pairwise_accuracy": 0.90 - 0.02 - 1e-6}, False),
        ({"interval_coverage": 0.80}, True),  # the coverage range is closed at both ends
        ({"interval_coverage": 0.80 - 1e-6}, False),
        ({"interval_coverage": 0.98}, True),
        ({"interval_coverage": 0.98 + 1e-6}, False),
    ],
)
def test_gate_tolerance_edges(changes: dict[str, float], promote: bool) -> None:
    assert gate(ACTIVE | changes, ACTIVE).promote is promote


def test_gate_gives_every_reason_a_candidate_fails() -> None:
    decision = gate({"spearman": 0.70, "pairwise_accuracy": 0.80, "interval_coverage": 0.99}, ACTIVE)
    assert not decision.promote
    assert decision.reasons == [
        "interval coverage 0.990 is outside 0.80–0.98",
        "spearman 0.700 is below the active model's 0.900 by more than 0.01",
        "pairwise_accuracy 0.800 is below the active model's 0.900 by more than 0.02",
    ]


def test_gate_without_an_active_model_judges_coverage_alone() -> None:
    assert gate({"spearman": 0.1, "pairwise_accuracy": 0.1, "interval_coverage": 0.9}, None) == GateDecision(True, [])


def test_gate_rejects_miscalibrated_intervals() -> None:
    decision = gate({"spearman": 0.95, "pairwise_accuracy": 0.95, "interval_coverage": 0.62}, None)
    assert decision == GateDecision(False, ["interval coverage 0.620 is outside 0.80–0.98"])


def test_metrics_count_pairs_and_bands() -> None:
    figures = regression_metrics(
        np.array([10.0, 30.0, 70.0]),
        np.array([15.0, 25.0, 90.0]),
        ["a", "b", "c"],
        [{"warmer": "c", "cooler": "a"}, {"warmer": "a", "cooler": "b"}],
        halfwidth=6.0,
    )
    assert figures["pairwise_accuracy"] == 0.5
    assert figures["band_accuracy"] == pytest.approx(2 / 3)
    assert figures["interval_coverage"] == pytest.approx(2 / 3)
    assert figures["mae"] == pytest.approx(10.0)
    assert figures["concordance"] == 1.0


def test_metrics_count_subtle_pairs_apart() -> None:
    # a > b by 5 points (subtle, ordered right), c > a by 60 (wide, ordered wrong)
    figures = regression_metrics(
        np.array([50.0, 40.0, 45.0]),
        np.array([50.0, 45.0, 95.0]),
        ["a", "b", "c"],
        [{"warmer": "a", "cooler": "b"}, {"warmer": "c", "cooler": "a"}],
        halfwidth=5.0,
    )
    assert (figures["pairs"], figures["subtle_pairs"]) == (2, 1)
    assert (figures["pairwise_accuracy"], figures["subtle_pairwise_accuracy"]) == (0.5, 1.0)


def test_training_records_the_test_split_fingerprint(trained: tuple, tiny_corpus: Path) -> None:
    result, registry = trained
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert metrics["test_sha256"] == load_corpus(tiny_corpus).split_sha256("test")
    # the gate takes a version's own figures when they were measured on the same test split
    assert _test_figures(registry, result.version, load_corpus(tiny_corpus), print) == metrics["test"]


def test_gate_evaluates_the_active_version_again_when_the_test_split_changed(
    trained: tuple, tiny_corpus: Path, tmp_path: Path
) -> None:
    result, registry = trained
    records = [json.loads(line) for line in (tiny_corpus / "messages.jsonl").read_text().splitlines()]
    changed = [r | {"score": 100 - r["score"]} if r["split"] == "test" else r for r in records]
    (tmp_path / "messages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    (tmp_path / "pairs.jsonl").write_text("")
    corpus = load_corpus(tmp_path)
    assert corpus.split_sha256("test") != load_corpus(tiny_corpus).split_sha256("test")
    said: list[str] = []

    figures = _test_figures(registry, result.version, corpus, said.append)

    stored = json.loads((result.path / "metrics.json").read_text())["test"]
    assert said == [f"{result.version} was evaluated on another test split; evaluating it on the current one"]
    assert figures["pairs"] == 0 and stored["pairs"] > 0
    assert figures["spearman"] == pytest.approx(-stored["spearman"], abs=1e-6)  # the labels were mirrored


def test_concordance_counts_misordered_message_pairs() -> None:
    figures = regression_metrics(np.array([10.0, 50.0, 40.0]), np.array([10.0, 40.0, 60.0]), ["a", "b", "c"], [], 5.0)
    assert figures["concordance"] == pytest.approx(2 / 3)  # b and c are swapped; a is below both


def test_conformal_interval_covers_at_least_its_level() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, 2200)
    predicted = truth + rng.normal(0, 8, 2200)
    calibration = Calibration.fit(predicted[:200], truth[:200], coverage=0.9)
    low, high = predicted[200:] - calibration.halfwidth, predicted[200:] + calibration.halfwidth
    assert np.mean((truth[200:] >= low) & (truth[200:] <= high)) >= 0.88


def test_train_args_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="mode must be 'lora' or 'full'; found 'half'"):
        TrainArgs(mode="half")


def test_full_fine_tuning_writes_a_whole_encoder_that_loads(tiny_base: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    args = TrainArgs(base=str(tiny_base), mode="full", max_tokens=32, epochs=1, max_steps=2, threads=1)
    result = train(args, load_corpus(tiny_corpus), Registry(tmp_path / "models"), log=lambda _: None)
    assert (result.path / "encoder" / "model.safetensors").is_file()
    assert not (result.path / "adapter").exists()
    assert 0 <= Scorer.from_pretrained(result.path).predict(["Dear friend."])[0] <= 100


@pytest.mark.parametrize("name", ["spearman", "pairwise_accuracy", "interval_coverage"])
def test_gate_rejects_a_candidate_with_a_nan_figure(name: str) -> None:
    figures = {"spearman": 0.95, "pairwise_accuracy": 0.95, "interval_coverage": 0.9} | {name: float("nan")}
    decision = gate(figures, {"spearman": 0.5, "pairwise_accuracy": 0.5, "interval_coverage": 0.9})
    assert not decision.promote
    assert decision.reasons == [f"{name} is nan: expected a number (a degenerate candidate, e.g. constant predictions)"]


def test_trained_version_widens_its_interval_with_distance_from_training(trained: tuple, tiny_corpus: Path) -> None:
    result, _ = trained
    scorer = Scorer.from_pretrained(result.path)
    calibration = json.loads((result.path / "calibration.json").read_text())
    assert calibration["scale_floor"] > 0 and calibration["unusual_distance"] > 0
    train_text = load_corpus(tiny_corpus).split("train")["text"][0]
    familiar, strange = scorer.score([train_text, "Zq xv 0918 kkkk pppp zzzz @@@@ ####."])
    assert familiar.distance is not None and strange.distance is not None
    assert familiar.distance < 0.01 < strange.distance  # a training text lies on its own embedding
    low, high = (
        scorer.calibration.interval(50.0, familiar.distance),
        scorer.calibration.interval(50.0, strange.distance),
    )
    assert high[1] - high[0] > low[1] - low[0]
    assert strange.unusual and not familiar.unusual


def test_loss_ignores_unlabelled_messages_and_uses_each_pairs_margin() -> None:
    from training.trainer import EffusivenessTrainer

    class Fixed(torch.nn.Module):
        def forward(self, **_: object) -> torch.Tensor:
            return torch.tensor([0.6, 0.5, 0.58])

    trainer = EffusivenessTrainer.__new__(EffusivenessTrainer)
    trainer.pair_margin, trainer.pair_weight = 0.05, 1.0
    inputs = {
        "input_ids": None, "attention_mask": None, "pool_mask": None, "window_message": None,
        "labels": torch.tensor([0.6, 0.5, float("nan")]),
        "pair_warmer": torch.tensor([0, 0]), "pair_cooler": torch.tensor([1, 2]),
        "pair_margin": torch.tensor([float("nan"), 0.01]),
    }  # fmt: skip
    loss = trainer.compute_loss(Fixed(), inputs)
    # MSE over the two labelled messages is 0; pair 0 leads by 0.10 > 0.05 (no loss); pair 1 by 0.02 > 0.01
    assert float(loss) == pytest.approx(0.0)
    inputs["pair_margin"] = torch.tensor([float("nan"), 0.06])
    assert float(trainer.compute_loss(Fixed(), inputs)) == pytest.approx((0.06 - 0.02) / 2, abs=1e-6)


def test_deletion_variants_drop_the_warmest_sentence_and_skip_cold_or_short_messages() -> None:
    from training.deletions import deletion_variants

    warm = "Dear Sir. Trade grew by a tenth. Our eternal and unbreakable friendship guides us. We wish you health."
    records = [
        {"id": "w", "text": warm, "score": 75.0, "group": "g"},
        {"id": "c", "text": warm, "score": 15.0, "group": "g2"},  # a cold message: a cut may be a reproach
        {"id": "s", "text": "Our eternal friendship. Thanks.", "score": 80.0, "group": "g3"},  # too short
    ]
    variants, pairs = deletion_variants(records)
    assert [v["id"] for v in variants] == ["w~deleted"]
    assert variants[0]["text"] == "Dear Sir. Trade grew by a tenth. We wish you health."
    assert np.isnan(variants[0]["score"]) and variants[0]["group"] == "g"
    assert pairs == [{"warmer": "w", "cooler": "w~deleted", "kind": "deletion"}]


def test_training_with_deletion_pairs_runs_and_loads(tiny_base: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    said: list[str] = []
    args = TrainArgs(base=str(tiny_base), max_tokens=32, epochs=1, max_steps=2, threads=1, deletion_pairs=True)
    result = train(args, load_corpus(tiny_corpus), Registry(tmp_path / "models"), log=said.append)
    assert any("deletion pairs join the ranking loss" in line and not line.startswith("0 ") for line in said)
    assert 0 <= Scorer.from_pretrained(result.path).predict(["Dear friend."])[0] <= 100


def test_gate_rejects_constant_predictions_with_the_reason() -> None:
    predicted = np.full(4, 50.0)
    figures = regression_metrics(predicted, np.array([10.0, 40.0, 60.0, 90.0]), list("abcd"), [], 40.0)
    decision = gate(figures, None)
    assert not decision.promote
    assert decision.reasons[0] == "the candidate gives every test message the same score (spread 0.0000 points)"


def test_gate_rejects_a_test_split_without_pairs_with_the_reason() -> None:
    target = np.array([10.0, 40.0, 60.0, 90.0])
    figures = regression_metrics(target + 1.0, target, list("abcd"), [], 5.0)
    decision = gate(figures, None)
    assert not decision.promote
    assert decision.reasons == [
        "the test split holds no judged pairs: expected at least one to measure pairwise accuracy"
    ]
