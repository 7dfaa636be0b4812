"""``python -m bench --quick`` on the tiny model: every section is written, progress shows, ``--only`` runs one
section, and every target is computed from the figures of the same run.
Nothing here checks speed: the figures of a smoke run on a random model mean nothing."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.compute import flop_per_token
from bench.load import Outcome
from bench.recipes import RECIPES
from bench.report import spread
from bench.run import SECTIONS, sections_of
from bench.texts import messages_of
from tests.factories import make_tiny_base, make_tiny_version, write_tiny_corpus

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ["torch", "onnx-fp32", "onnx-int8"]
PHASES = ["alone", "load_50", "load_80", "overload", "recovery"]


def _run_bench(version: Path, folder: Path, *extra: str) -> tuple[dict[str, Any], str, str]:
    """``python -m bench --quick`` on ``version`` and a tiny corpus: its JSON, its markdown and its stderr."""
    corpus = write_tiny_corpus(folder / "corpus") / "messages.jsonl"
    out = folder / "results"
    command = [sys.executable, "-m", "bench", "--quick", "--version", str(version), "--corpus", str(corpus)]
    done = subprocess.run([*command, "--out", str(out), *extra], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), (out / "latest.md").read_text(), done.stderr


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    """One quick run of every section on a tiny version of three layers (so that the shipped int8 recipe keeps one
    fp32, a third of the encoder) and a tiny corpus."""
    folder = tmp_path_factory.mktemp("bench")
    version = make_tiny_version(make_tiny_base(folder / "base", layers=3), folder / "versions" / "tiny-0001")
    return _run_bench(version, folder)


def test_quick_run_writes_every_section(quick_run: tuple[dict[str, Any], str, str]) -> None:
    results, _, _ = quick_run
    assert set(results) == {"meta", "matmul", "model", "recipes", "service", "reload", "start", "targets"}
    assert results["meta"]["quick"] is True
    assert results["meta"]["sections"] == list(SECTIONS)
    assert results["matmul"]["gflops"] > 0
    assert results["matmul"]["end_gflops"] > 0
    assert list(results["model"]["engines"]) == ENGINES
    for engine in results["model"]["engines"].values():
        assert list(engine["lengths"]) == ["30", "200", "600"]
    assert list(results["recipes"]["recipes"]) == list(RECIPES)
    service = results["service"]
    assert list(service["throughput"]) == ["30", "200"]
    for by_server in service["throughput"].values():
        assert list(by_server) == ["batcher_on", "batcher_off", "naive"]
        assert all(len(row["rounds"]) == 2 for row in by_server.values())  # QUICK: two rounds
    assert [phase for phase in PHASES if phase in service["latency"]] == PHASES
    assert set(service["rss"]) == {"service_batcher_on", "service_batcher_off", "naive"}
    assert len(results["start"]["first_start_s"]) == 1
    assert len(results["start"]["cli_s"]) == 1
    assert len(results["targets"]) == 14


def test_quick_run_shows_progress_on_stderr(quick_run: tuple[dict[str, Any], str, str]) -> None:
    _, _, stderr = quick_run
    for line in ("engines round 2/2 · onnx-int8", "recipes round 1/2 · int8-all", "service round 2/2 · naive · 30"):
        assert line in stderr
    assert "start · cold `diplotone score` 1/1" in stderr


def test_quick_run_computes_targets_from_measured_figures(quick_run: tuple[dict[str, Any], str, str]) -> None:
    results, _, _ = quick_run
    by_name = {row["name"]: row for row in results["targets"]}

    def named(start: str) -> dict[str, Any]:
        (row,) = [row for name, row in by_name.items() if name.startswith(start)]
        return row

    short = results["service"]["throughput"]["30"]
    on, naive = short["batcher_on"]["rounds_ok_per_s"], short["naive"]["rounds_ok_per_s"]
    assert min(on) > 0
    assert min(naive) > 0
    ratios = [a / b for a, b in zip(on, naive, strict=True)]
    assert named("service ≥ 3×")["values"] == pytest.approx(ratios)
    assert named("service ≥ 3×")["measured"] == pytest.approx(statistics.median(ratios))
    engines = results["model"]["engines"]
    int8 = engines["onnx-int8"]["lengths"]["200"]["rounds_messages_per_s"]
    torch_rates = engines["torch"]["lengths"]["200"]["rounds_messages_per_s"]
    ratios = [a / b for a, b in zip(int8, torch_rates, strict=True)]
    assert named("int8 ÷ torch ≥")["measured"] == pytest.approx(statistics.median(ratios))
    assert named("int8 ÷ torch round-to-round")["measured"] == pytest.approx(
        (max(ratios) - min(ratios)) / statistics.median(ratios)
    )
    recipes = results["recipes"]["recipes"]
    ratios = [
        a / b
        for a, b in zip(
            recipes["int8-all"]["rounds_messages_per_s"], recipes["int8-shipped"]["rounds_messages_per_s"], strict=True
        )
    ]
    assert named("previous all-int8")["measured"] == pytest.approx(statistics.median(ratios))
    assert named("one 200-word message")["measured"] == results["service"]["latency"]["alone"]["p50_ms"]
    overload = results["service"]["latency"]["overload"]
    accepted = named("accepted requests p99 ≤ 2.5 s under 2× overload")
    assert accepted["measured"] == overload["p99_ms"]
    assert accepted["inputs"]["rejected_429_share"] == overload["rejected_429"] / overload["requests"]
    assert accepted["inputs"]["max_queue_wait_s"] == 2.0  # the service's default, read from its /v1/info
    assert named("restart")["measured"] == pytest.approx(statistics.median(results["start"]["restart_s"]))
    assert named("`diplotone score")["kind"] == named("restart")["kind"] != named("service ≥ 3×")["kind"]
    for row in results["targets"]:
        if row["measured"] is not None:
            assert row["ratio"] == (row["measured"] / row["threshold"] if row["threshold"] else None)
            assert row["reached"] == (
                row["measured"] >= row["threshold"] if row["op"] == ">=" else row["measured"] <= row["threshold"]
            )


def test_quick_run_recipes_keep_layers_fp32_only_in_the_shipped_one(
    quick_run: tuple[dict[str, Any], str, str],
) -> None:
    recipes = quick_run[0]["recipes"]["recipes"]
    assert recipes["int8-all"]["fp32_layers"] == []
    assert len(recipes["int8-shipped"]["fp32_layers"]) == 1  # FP32_LAYERS, capped at a third of the 3 layers
    assert recipes["onnx-fp32"]["parity_vs_fp32"]["max_abs_diff"] == 0.0  # fp32 against itself
    for row in recipes.values():
        assert row["parity_vs_fp32"]["n"] == quick_run[0]["recipes"]["parity_texts"]


def test_quick_run_counts_every_request_once(quick_run: tuple[dict[str, Any], str, str]) -> None:
    service = quick_run[0]["service"]
    rounds = [row for by_server in service["throughput"].values() for s in by_server.values() for row in s["rounds"]]
    for summary in [*rounds, *(service["latency"][p] for p in PHASES)]:
        assert summary["requests"] > 0
        assert summary["ok"] + summary["rejected_429"] + summary["failed"] == summary["requests"]


def test_quick_run_batcher_off_scores_one_request_per_model_call(quick_run: tuple[dict[str, Any], str, str]) -> None:
    for by_server in quick_run[0]["service"]["throughput"].values():
        for row in by_server["batcher_off"]["rounds"]:
            assert row["batching"]["batches"] > 0
            assert row["batching"]["texts_per_batch"] == 1.0  # one single-text request per call
        assert all(row["batching"]["batches"] > 0 for row in by_server["batcher_on"]["rounds"])


def test_quick_run_reload_under_load_fails_no_request(quick_run: tuple[dict[str, Any], str, str]) -> None:
    for reload in quick_run[0]["reload"]["repeats"]:
        assert reload["activation"]["status"] == 200
        assert reload["failed"] == 0
        assert reload["rejected_429"] == 0
        assert reload["version"] in reload["served_versions"]  # the new version answered while the load went on
        assert reload["engine_s"] is not None  # and came to serve on the engine asked for
    prepared = [reload["prepared_s"] is not None for reload in quick_run[0]["reload"]["repeats"]]
    assert prepared == [True, False]  # one as a training run's candidate, one installed by hand


def test_quick_run_markdown_shows_each_target(quick_run: tuple[dict[str, Any], str, str]) -> None:
    results, markdown, _ = quick_run
    assert markdown.startswith("# diplotone benchmark — **quick smoke run")
    assert "partial run" not in markdown
    for row in results["targets"]:
        assert row["name"] in markdown
    assert "Under 2× overload the accepted requests (200) took p50 " in markdown


def test_only_runs_the_chosen_section_and_says_so(tiny_version: Path, tmp_path: Path) -> None:
    results, markdown, _ = _run_bench(tiny_version, tmp_path, "--only", "compute")
    assert set(results) == {"meta", "matmul", "targets"}
    assert results["targets"] == []
    assert "**partial run**: only compute" in markdown


def test_sections_of_adds_what_a_section_needs_and_refuses_unknown_ones() -> None:
    assert sections_of(None) == list(SECTIONS)
    assert sections_of(["service", "engines"]) == ["compute", "engines", "service"]
    with pytest.raises(ValueError, match="found warp"):
        sections_of(["warp"])


def test_spread_is_range_over_median() -> None:
    assert spread([20.0, 50.0, 60.0]) == pytest.approx(0.8)
    assert spread([5.0]) == 0.0
    assert spread(None) is None


def test_flop_per_token_of_minilm_on_full_windows() -> None:
    class MiniLM:
        hidden_size, intermediate_size, num_hidden_layers = 384, 1536, 6

    # per layer 2·(4·384² + 2·384·1536) = 3,538,944 for the projections + 4·256·384 = 393,216 for attention
    assert flop_per_token(MiniLM(), 256) == 6 * (3_538_944 + 393_216)


def test_messages_of_cuts_exact_word_counts_and_wraps() -> None:
    messages = messages_of(7, ["one two three", "four five"], count=3)
    assert messages == [
        "one two three four five one two",
        "three four five one two three four",
        "five one two three four five one",
    ]


def test_outcome_summary_counts_statuses_and_percentiles() -> None:
    outcome = Outcome(
        started=0.0, finished=2.0, requests=[(0.0, 0.010, 200), (0.1, 0.030, 200), (0.2, 0.001, 429), (0.3, 0.5, 0)]
    )
    summary = outcome.summary()
    assert summary["ok"] == 2
    assert summary["rejected_429"] == 1
    assert summary["failed"] == 1
    assert summary["ok_per_s"] == 1.0
    assert summary["p50_ms"] == pytest.approx(10.0)
    assert summary["p99_ms"] == pytest.approx(30.0)
