"""One benchmark run: the chosen sections (matmul limits, engines, int8 recipes, service, reload, start), in turn,
into one result."""

from __future__ import annotations

import gc
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.compute import Workload, int8_matmul_gops, matmul_gflops, measure_engine
from bench.progress import phase, say
from bench.recipes import run_recipes
from bench.report import targets
from bench.servers import ROOT, cpu_plan
from bench.service_bench import ServicePlan, run_reload, run_service, run_start
from bench.texts import corpus_texts, messages_of
from model.engines import ENGINES, OnnxEngine
from model.engines.export import onnx_files
from model.predictor import Predictor
from model.prepare_engine import CALIBRATION_TEXTS

LENGTHS = (30, 200, 600)  # words per message, model only
SERVICE_LENGTHS = (30, 200)  # words per message, service: short ones, where batching should pay, and the usual
TARGET_WORDS = 200
# What a run can do, in the order it does it; ``--only`` picks some. "engines" needs the matmul limits, so it brings
# "compute" along.
SECTIONS = ("compute", "engines", "recipes", "service", "reload", "start")


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    quick: bool = False
    threads: int = 2
    model_s: float = 3.0  # per engine, length and round
    model_rounds: int = 3  # engines measured in turn, round after round; each figure is the median round's
    single_repeats: int = 30
    messages: int = 64  # distinct messages per length
    recipe_s: float = 5.0  # per recipe and round
    recipe_rounds: int = 3
    service: ServicePlan = field(default_factory=ServicePlan)


FULL = Plan()
QUICK = Plan(
    quick=True,
    model_s=0.2,
    model_rounds=2,
    single_repeats=3,
    messages=8,
    recipe_s=0.2,
    recipe_rounds=2,
    service=ServicePlan(
        clients=32,
        warmup_s=0.3,
        throughput_s=0.5,
        alone_s=0.5,
        load_s=0.8,
        overload_s=0.8,
        recovery_s=0.5,
        reload_tail_s=0.5,
        reload_limit_s=120.0,
        reload_repeats=2,  # one prepared as a training run would, one not
        rounds=2,
        restarts=1,
        cli_repeats=1,
    ),
)


def sections_of(only: list[str] | None) -> list[str]:
    """The sections a run does, in run order: all of them, or those of ``only`` (and what they need)."""
    if not only:
        return list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise ValueError(f"--only: expected sections among {', '.join(SECTIONS)}; found {', '.join(unknown)}")
    wanted = set(only) | ({"compute"} if "engines" in only else set())
    return [name for name in SECTIONS if name in wanted]


def run(plan: Plan, version: Path, corpus: Path, command: str, sections: list[str] | None = None) -> dict[str, Any]:
    """The chosen ``sections`` (default all), in one process tree, on ``version`` (a model version folder) and texts
    from the test split of ``corpus`` (a messages.jsonl). The version is copied first so that its ONNX cache lands in
    the copy."""
    sections = sections or list(SECTIONS)
    started, clock = datetime.now(UTC), time.monotonic()
    texts = corpus_texts(corpus)
    calibration = corpus_texts(corpus, "train")[:CALIBRATION_TEXTS]  # as the service calibrates int8
    by_words = {words: messages_of(words, texts, plan.messages) for words in sorted({*LENGTHS, *SERVICE_LENGTHS})}
    work = Path(tempfile.mkdtemp(prefix="diplotone-bench-"))
    say(f"sections {', '.join(sections)} on {version.name}; working in {work}")
    try:
        served = shutil.copytree(version, work / "versions" / version.name, ignore=shutil.ignore_patterns("cache"))
        results: dict[str, Any] = {"meta": {**_meta(plan, version, command, started), "sections": sections}}
        if "compute" in sections:
            with phase("compute: fp32 and int8 matmul limits"):
                results["matmul"] = matmul_gflops(plan.threads)
                results["matmul"]["int8_gops"] = int8_matmul_gops(plan.threads)["gops"]
            matmul = results["matmul"]
            say(f"compute: fp32 {matmul['gflops']:.1f} GFLOP/s, int8 {matmul['int8_gops']:.0f} GOP/s")
        if "engines" in sections:
            results["model"] = model_only(plan, served, texts, calibration, by_words, results["matmul"]["gflops"])
        if "recipes" in sections:
            results["recipes"] = run_recipes(
                served,
                work,
                TARGET_WORDS,
                by_words[TARGET_WORDS],
                texts,
                calibration,
                plan.threads,
                plan.recipe_s,
                plan.recipe_rounds,
            )
        if {"service", "reload", "start"} & set(sections):
            _pin_load_generator(plan.threads)
        if "service" in sections:
            service_messages = {words: by_words[words] for words in SERVICE_LENGTHS}
            results["service"] = run_service(plan.service, served, service_messages, corpus.parent, work, plan.threads)
        if "reload" in sections:
            results["reload"] = run_reload(
                plan.service, served, by_words[TARGET_WORDS], corpus.parent, work, plan.threads
            )
        if "start" in sections:
            results["start"] = run_start(
                plan.service, served, by_words[TARGET_WORDS][0], corpus.parent, work, plan.threads
            )
        if "compute" in sections:
            # The limit again at the end: if it moved, something else used the CPUs during the run.
            results["matmul"]["end_gflops"] = matmul_gflops(plan.threads)["gflops"]
        results["targets"] = targets(results)
        results["meta"]["seconds"] = time.monotonic() - clock
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def model_only(
    plan: Plan,
    version: Path,
    texts: list[str],
    calibration: list[str],
    by_words: dict[int, list[str]],
    limit_gflops: float,
) -> dict[str, Any]:
    """Each engine on 30-, 200- and 600-word messages.

    Each is loaded as the service loads it, with the parity texts, so ``served`` says what the service would run; an
    engine the parity check refuses is still timed (put back in by hand), so its speed is known beside the refusal.
    Engines are measured in turn, ``plan.model_rounds`` times over: a machine that slows down for a while (a shared
    VM does) then slows every engine's figures alike instead of one engine's, and each figure is that of the
    median round (all rounds' messages/s are kept beside it).
    """
    torch.set_num_threads(plan.threads)
    predictors: dict[str, Predictor] = {}
    served: dict[str, str] = {}
    for name in ENGINES:
        with phase(f"engines: load {name} as the service does (export and parity check on first use)"):
            predictor = Predictor.from_pretrained(
                version, engine=name, threads=plan.threads, parity_texts=texts, calibration_texts=calibration
            )
        served[name] = predictor.engine.name
        if predictor.engine.name != name:
            files = onnx_files(version, predictor.net, predictor.window_batches(calibration))
            predictor.engine = OnnxEngine(files[name], name, plan.threads)
        predictors[name] = predictor
    workloads = [Workload.of(predictors["torch"], words, by_words[words]) for words in LENGTHS]
    rounds = []
    for index in range(plan.model_rounds):
        measured = {}
        for name, predictor in predictors.items():
            measured[name] = measure_engine(predictor, workloads, limit_gflops, plan.model_s, plan.single_repeats)
            rates = ", ".join(f"{words} words {row['messages_per_s']:.1f}" for words, row in measured[name].items())
            say(f"engines round {index + 1}/{plan.model_rounds} · {name}: {rates} messages/s")
        rounds.append(measured)
    engines = {
        name: {
            "served": served[name],
            "report": predictor.engine_report,
            "lengths": {length: _median_round([r[name][length] for r in rounds]) for length in rounds[0][name]},
        }
        for name, predictor in predictors.items()
    }
    del predictors
    gc.collect()
    return {"lengths_words": list(LENGTHS), "engines": engines}


def _median_round(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose messages/s is the median (the lower middle for an even count), with every round's rate."""
    ranked = sorted(rows, key=lambda row: row["messages_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "rounds_messages_per_s": [row["messages_per_s"] for row in rows]}


def _pin_load_generator(threads: int) -> None:
    """Move this process (the load generator) off the servers' CPUs where the machine has spare ones."""
    server_cpus, client_cpus = cpu_plan(threads)
    if client_cpus != server_cpus:
        os.sched_setaffinity(0, client_cpus)


def _meta(plan: Plan, version: Path, command: str, started: datetime) -> dict[str, Any]:
    import onnxruntime

    server_cpus, client_cpus = cpu_plan(plan.threads)
    return {
        "command": command,
        "quick": plan.quick,
        "version": version.name,
        "started": started.isoformat(" ", "seconds"),
        "seconds": None,
        "commit": _commit(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": plan.threads,
        "server_cpus": server_cpus,
        "load_generator_cpus": client_cpus,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average_at_start": os.getloadavg()[0],  # above ~0.5 on an idle box: something else was running
    }


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+uncommitted" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
