"""Labels given in the service: a held-out share the gate judges on, their weight,, the warm start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.contract import STORED_PREFIX
from model.registry import Registry
from tests.factories import write_tiny_corpus
from training.args import TrainArgs
from training.batches import GroupDataset
from training.corpus import USER_TEST_SHARE, load_corpus, load_snapshot
from training.gate import gate
from training.pipeline import _labelled_and_replayed, retrain, train

FIGURES = {"spearman": 0.9, "pairwise_accuracy": 0.9, "interval_coverage": 0.9}


def _snapshot(corpus_dir: Path, path: Path, copies: int = 3) -> Path:
    """The bundled corpus plus stored copies of its messages, as the service writes it (no split, one group each)."""
    records = [json.loads(line) for line in (corpus_dir / "messages.jsonl").read_text().splitlines()]
    stored = [
        {**r, "id": f"{STORED_PREFIX}{n}-{i}", "group": f"stored-group-{n}-{i}", "split": None}
        for n in range(copies)
        for i, r in enumerate(records)
    ]
    path.write_text(json.dumps({"messages": records + stored, "pairs": []}))
    return path


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def test_a_fixed_share_of_stored_groups_is_held_out_and_bundled_messages_keep_their_split(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    first = load_snapshot(_snapshot(tiny_corpus, tmp_path / "a.json", copies=8))
    again = load_snapshot(_snapshot(tiny_corpus, tmp_path / "b.json", copies=8))
    stored = [(r["id"], r["split"]) for r in first.messages if r["id"].startswith(STORED_PREFIX)]
    assert stored == [(r["id"], r["split"]) for r in again.messages if r["id"].startswith(STORED_PREFIX)]
    share = sum(split == "user_test" for _, split in stored) / len(stored)
    assert abs(share - USER_TEST_SHARE / 100) < 0.1
    bundled = [r for r in first.messages if not r["id"].startswith(STORED_PREFIX)]
    assert "user_test" not in {r["split"] for r in bundled}
    assert {r["split"] for r in bundled} == {r["split"] for r in load_corpus(tiny_corpus).messages}


def test_gate_refuses_a_candidate_worse_on_the_users_held_out_labels() -> None:
    decision = gate(FIGURES, FIGURES, {"mae": 9.5, "n": 12.0}, {"mae": 9.0, "n": 12.0})
    assert not decision.promote
    assert decision.reasons == ["on the 12 held-out user labels the mean error 9.50 is above the active model's 9.00"]


def test_gate_promotes_a_candidate_equal_or_better_on_the_users_labels_and_refuses_nan() -> None:
    assert gate(FIGURES, FIGURES, {"mae": 9.0, "n": 12.0}, {"mae": 9.0, "n": 12.0}).promote
    assert gate(FIGURES, FIGURES, {"mae": 7.0, "n": 12.0}, {"mae": 9.0, "n": 12.0}).promote
    assert not gate(FIGURES, FIGURES, {"mae": float("nan"), "n": 12.0}, {"mae": 9.0, "n": 12.0}).promote


def test_user_weight_repeats_the_stored_groups_only(tiny_base: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    corpus = load_snapshot(_snapshot(tiny_corpus, tmp_path / "s.json", copies=1))
    rows = corpus.split("train").to_list()
    dataset = GroupDataset(rows, [], AutoTokenizer.from_pretrained(str(tiny_base)), 32)
    before = len(dataset)
    stored = sum(any(i.startswith(STORED_PREFIX) for i in g.ids) for g in dataset.groups)
    assert dataset.repeat(STORED_PREFIX, 3) == stored > 0
    assert len(dataset) == before + 2 * stored


def test_a_warm_start_trains_on_the_labels_and_a_replayed_sample() -> None:
    train_rows = [{"id": f"c{i}", "group": f"g{i // 2}"} for i in range(40)]
    train_rows += [{"id": f"{STORED_PREFIX}{i}", "group": f"s{i}"} for i in range(5)]
    chosen = _labelled_and_replayed(train_rows, replay=6, seed=1)
    assert {r["id"] for r in chosen if r["id"].startswith(STORED_PREFIX)} == {f"{STORED_PREFIX}{i}" for i in range(5)}
    replayed_groups = {r["group"] for r in chosen if not r["id"].startswith(STORED_PREFIX)}
    assert len(replayed_groups) == 6 and len(chosen) == 5 + 12  # whole groups: both members of each
    assert chosen == _labelled_and_replayed(train_rows, replay=6, seed=1)


def test_warm_start_continues_from_the_versions_adapter_and_is_gated_on_the_users_share(
    tiny_base: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    registry = Registry(tmp_path / "models")
    quick = {"base": str(tiny_base), "max_tokens": 32, "batch_groups": 2, "threads": 1, "learning_rate": 5e-3}
    first = train(TrainArgs(**quick, epochs=2), load_corpus(tiny_corpus), registry, log=lambda _: None)
    registry.activate(first.version)
    snapshot = load_snapshot(_snapshot(tiny_corpus, tmp_path / "s.json", copies=3))
    lines: list[str] = []
    warm = TrainArgs(**quick, epochs=1, warm_start=str(first.path), replay=3, user_weight=2)
    outcome = retrain(warm, snapshot, registry, log=lines.append)
    assert any("warm start from" in line for line in lines)
    # The adapter went on from the first version's weights (it did not start again from zero B matrices) and moved.
    adapter = "adapter/adapter_model.safetensors"
    before, after = load_file(str(first.path / adapter)), load_file(str(registry.path(str(outcome.version)) / adapter))
    moved = [name for name in before if "lora_B" in name and not torch.equal(before[name], after[name])]
    assert moved and all(before[name].abs().sum() > 0 for name in moved)
    candidate, previous = outcome.metrics["user_test"], outcome.previous_user_test
    assert previous is not None and candidate["n"] == previous["n"] >= 5  # both judged on the same held-out labels
    judged_on_users = any("held-out user labels" in reason for reason in outcome.reasons)
    assert judged_on_users == (candidate["mae"] > previous["mae"])
