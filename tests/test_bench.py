"""``python -m bench --quick`` on the tiny model: every section is written, and every target is a ratio of figures
measured in the same run. Nothing here checks speed: the figures of a smoke run on a random model mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.compute import flop_per_token
from bench.load import Outcome
from bench.texts import messages_of
from tests.factories import write_tiny_corpus

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ["torch", "onnx-fp32", "onnx-int8"]
PHASES = ["alone", "load_50", "load_80", "overload", "recovery"]


@pytest.fixture(scope="module")
def quick_run(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One quick run on the tiny version and a tiny corpus: its JSON and its markdown."""
    folder = tmp_path_factory.mktemp("bench")
    corpus = write_tiny_corpus(folder / "corpus") / "messages.jsonl"
    out = folder / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--version",
            str(tiny_version),
            "--corpus",
            str(corpus),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), (out / "latest.md").read_text()


def test_quick_run_writes_every_section(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    assert set(results) == {"meta", "matmul", "model", "service", "targets"}
    assert results["meta"]["quick"] is True
    assert results["matmul"]["gflops"] > 0
    assert results["matmul"]["end_gflops"] > 0
    assert list(results["model"]["engines"]) == ENGINES
    for engine in results["model"]["engines"].values():
        assert list(engine["lengths"]) == ["30", "200", "600"]
    service = results["service"]
    for part in ("batcher_on", "batcher_off", "naive", "latency", "cold_start", "reload", "rss"):
        assert part in service
    assert [phase for phase in PHASES if phase in service["latency"]] == PHASES
    assert set(service["rss"]) == {"service_batcher_on", "service_batcher_off", "naive"}
    assert len(results["targets"]) == 7


def test_quick_run_computes_targets_from_measured_figures(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    service, engines = results["service"], results["model"]["engines"]
    by_name = {row["name"].split(" ")[0] + " " + row["name"].split(" ")[1]: row for row in results["targets"]}
    on, off, naive = (service[k]["ok_per_s"] for k in ("batcher_on", "batcher_off", "naive"))
    # Whatever a phase of under a second managed to send, each target is the quotient of this run's figures.
    assert by_name["service ≥"]["measured"] == _quotient(on, naive)
    assert by_name["batcher on"]["measured"] == _quotient(on, off)
    torch_200 = engines["torch"]["lengths"]["200"]
    int8_200 = engines["onnx-int8"]["lengths"]["200"]
    if engines["onnx-int8"]["served"] == "onnx-int8":
        assert by_name["int8 ≥"]["measured"] == pytest.approx(int8_200["messages_per_s"] / torch_200["messages_per_s"])
    expected = torch_200["tokens_per_s"] * torch_200["flop_per_token"] / (results["matmul"]["gflops"] * 1e9)
    assert by_name["torch engine"]["measured"] == pytest.approx(expected)
    assert by_name["one message"]["measured"] == service["latency"]["alone"]["p50_ms"]
    for row in results["targets"]:
        if row["measured"] is not None:
            assert row["ratio"] == pytest.approx(row["measured"] / row["threshold"])
            assert row["reached"] == (
                row["measured"] >= row["threshold"] if row["op"] == ">=" else row["measured"] <= row["threshold"]
            )


def test_quick_run_counts_every_request_once(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    service = results["service"]
    for summary in [
        service["batcher_on"],
        service["naive"],
        service["reload"],
        *(service["latency"][p] for p in PHASES),
    ]:
        assert sum(summary["status"].values()) == summary["requests"]
        assert summary["ok"] + summary["rejected_429"] + summary["failed"] == summary["requests"]
        assert summary["ok"] == summary["status"].get("200", 0)


def test_quick_run_batcher_off_scores_one_request_per_model_call(quick_run: tuple[dict[str, Any], str]) -> None:
    off = quick_run[0]["service"]["batcher_off"]["batching"]
    assert off["texts_per_batch"] == (1.0 if off["batches"] else None)  # one single-text request per call


def test_quick_run_reload_under_load_fails_no_request(quick_run: tuple[dict[str, Any], str]) -> None:
    reload = quick_run[0]["service"]["reload"]
    old, new = "tiny-0001", "tiny-0001-bench-b"
    assert reload["version"] == new
    assert (reload["activation"]["status"], reload["activation"]["body"]) == (200, {"version": new, "previous": old})
    assert reload["failed"] == 0
    assert reload["rejected_429"] == 0
    # every answer came from the old version or the new one (how many from each depends on the timing)
    assert set(reload["served_versions"]) <= {old, new}
    assert sum(reload["served_versions"].values()) == reload["ok"]


def test_quick_run_markdown_shows_each_target(quick_run: tuple[dict[str, Any], str]) -> None:
    results, markdown = quick_run
    assert markdown.startswith("# diplotone benchmark — **quick smoke run")
    for row in results["targets"]:
        assert row["name"] in markdown


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


def _quotient(numerator: float, denominator: float) -> object:
    return None if not denominator else pytest.approx(numerator / denominator)
