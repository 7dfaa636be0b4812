"""``python -m bench.soak`` on the tiny model for a few seconds: the mix reaches every kind, the report and the exit
status follow the verdict; and the verdict's rules on their own. Nothing here checks speed or memory figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import KINDS, _kind, verdict
from tests.factories import write_tiny_corpus

ROOT = Path(__file__).resolve().parent.parent


def test_a_429_is_back_pressure_on_the_kinds_that_score_and_an_error_elsewhere() -> None:
    answers = [(0.01, 200), (0.02, 429), (0.5, 500), (0.03, 0)]

    score, listed = _kind("score", answers), _kind("list", answers)

    assert (score["ok"], score["rejected_429"], score["errors"]) == (1, 1, 2)
    assert (listed["ok"], listed["rejected_429"], listed["errors"]) == (1, 0, 3)
    assert score["p50_ms"] == score["p99_ms"] == 10.0  # latency of the answers the kind expects only


def test_write_expects_201_and_counts_a_200_as_an_error() -> None:
    assert _kind("write", [(0.1, 201), (0.1, 200)])["errors"] == 1


@pytest.mark.parametrize(
    ("errors", "growth", "reasons"),
    [
        (0, 9.9, []),
        (0, -3.0, []),
        (1, 0.0, ["1 errors: expected none"]),
        (0, 10.0, ["RSS grew by 10.0%: expected under 10%"]),
        (0, None, ["the server's RSS could not be read at the start and the end"]),
    ],
)
def test_verdict_fails_on_any_error_or_rss_growth_of_ten_percent(
    errors: int, growth: float | None, reasons: list[str]
) -> None:
    assert verdict(errors, growth) == reasons


def test_soak_runs_the_mix_and_writes_its_report(tiny_version: Path, tmp_path: Path) -> None:
    corpus = write_tiny_corpus(tmp_path / "corpus") / "messages.jsonl"
    out = tmp_path / "results"
    command = [sys.executable, "-m", "bench.soak", "--version", str(tiny_version), "--corpus", str(corpus)]
    command += ["--engine", "torch", "--threads", "1", "--seconds", "4", "--rate", "25", "--out", str(out)]

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)

    result = json.loads((out / "soak.json").read_text())
    assert done.returncode == (0 if result["verdict"]["passed"] else 1), done.stderr[-3000:]
    assert result["totals"]["errors"] == 0, result["kinds"]
    assert list(result["kinds"]) == list(KINDS)
    for kind in ("score", "write", "label", "list"):
        assert result["kinds"][kind]["ok"] > 0, kind
    assert result["kinds"]["label"]["requests"] == result["totals"]["messages_stored"]
    assert sum(row["requests"] for row in result["kinds"].values()) == result["totals"]["requests"]
    assert result["rate"] == {
        "highest_per_s": 25.0,
        "source": "given (--rate)",
        "probe": None,
        "fraction": 0.8,
        "offered_per_s": 20.0,
    }
    assert result["meta"]["limits"]["max_queue_wait_s"] == 2.0
    assert result["rss"]["start_mb"] > 0 and result["rss"]["end_mb"] > 0
    assert "soak: 4 s of the mix at 20.0 arrivals/s" in done.stderr
    markdown = (out / "soak.md").read_text()
    assert markdown.startswith("# diplotone soak — ")
    assert "| score |" in markdown and "| timeline |" in markdown
