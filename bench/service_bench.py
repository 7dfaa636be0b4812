"""The service side, in three sections: ``service`` (throughput against the naive baseline and with batching off,
latency alone and under open-loop load, 2× overload (the accepted requests' p50 and p99, the share refused with 429)
and recovery, resident memory), ``reload`` (activating new
versions under load) and ``start`` (first start, restart, the naive baseline's start, a one-shot CLI score).

Only one server at a time is ever under load; the others wait idle.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.load import Target, closed_loop, open_loop
from bench.progress import phase, say
from bench.servers import ROOT, Server, cpu_plan, launch, thread_env
from model import Registry
from model.artifacts import write_manifest

SERVICE_APP = "service.app:create_app"
NAIVE_APP = "bench.naive:create_app"
SCORE_ENGINE = "onnx-int8"  # what the service serves in the bench; it falls back by itself where parity fails


@dataclass(frozen=True)
class ServicePlan:
    """How long each phase runs (seconds) and how many clients it uses."""

    clients: int = 32
    warmup_s: float = 3.0
    throughput_s: float = 10.0  # per server, length and round
    alone_s: float = 20.0
    load_s: float = 20.0
    overload_s: float = 30.0  # long enough to fill the 256-text queue and see 429s
    recovery_s: float = 15.0
    reload_clients: int = 8
    reload_tail_s: float = 3.0  # load kept on after the activation answered
    reload_limit_s: float = 300.0
    reload_repeats: int = 2  # new versions activated one after another
    rounds: int = 3  # servers measured in turn, round after round
    restarts: int = 3
    cli_repeats: int = 3


def run_service(
    plan: ServicePlan, version: Path, messages: dict[int, list[str]], corpus: Path, work: Path, threads: int
) -> dict[str, Any]:
    """Throughput of our service (batcher on, batcher off) and of the naive baseline on each length of ``messages``
    (words → messages), then latency and overload on the service; ``version`` is the model version folder served by
    all three, ``corpus`` the folder of the messages.jsonl whose test split the service checks its engine on.

    The three servers are up together and measured in turn, ``plan.rounds`` rounds over: an idle server takes no
    CPU, and a machine that slows down for a minute then slows all three alike, so each round gives a ratio of
    figures measured seconds apart.
    """
    results: dict[str, Any] = {
        "messages_words": list(messages),
        "clients": plan.clients,
        "engine_requested": SCORE_ENGINE,
        "threads": threads,
    }
    servers: dict[str, Server] = {}
    try:
        data_on = data_dir(work / "data-on", version)
        with phase("service: start the service, batcher on (a fresh data directory: exports the ONNX encoders)"):
            servers["batcher_on"] = _service(data_on, corpus, threads, work, "service-batcher-on")
        data_off = data_dir(work / "data-off", version, cache_from=data_on / "models" / version.name)
        with phase("service: start the service, batcher off"):
            servers["batcher_off"] = _service(
                data_off, corpus, threads, work, "service-batcher-off", max_batch_requests=1
            )
        with phase("service: start the naive baseline"):
            servers["naive"] = _naive(version, threads, work)
        results["ready_s"] = {name: server.ready_s for name, server in servers.items()}
        results.update(_served_engine(servers["batcher_on"]))
        results["throughput"] = _throughput_rounds(plan, servers, messages)
        longest = max(messages)
        max_rate = statistics.median(results["throughput"][str(longest)]["batcher_on"]["rounds_ok_per_s"])
        with phase(f"service: latency alone, under open-loop load and 2× overload ({longest} words)"):
            results["latency"] = _latency(plan, servers["batcher_on"], messages[longest], max_rate)
        results["engine_log"] = _refusals(servers["batcher_on"])
    finally:
        for server in servers.values():
            server.stop()
    results["rss"] = {f"service_{name}" if name != "naive" else name: s.memory() for name, s in servers.items()}
    return results


def _naive(version: Path, threads: int, work: Path) -> Server:
    env = {"BENCH_NAIVE_VERSION": str(version), "BENCH_NAIVE_THREADS": str(threads)}
    return launch("naive", NAIVE_APP, env, threads, work / "logs")


def _served_engine(server: Server) -> dict[str, Any]:
    """The engine the service chose (it falls back by itself where parity refuses int8) and its limits, from its
    /v1/info."""
    import httpx

    info = httpx.get(f"{server.url}/v1/info", timeout=30).json()
    return {
        "engine_served": info.get("engine"),
        "engine_report": info.get("engine_report"),
        "limits": info.get("limits"),
    }


def _throughput_rounds(
    plan: ServicePlan, servers: dict[str, Server], messages: dict[int, list[str]]
) -> dict[str, dict[str, Any]]:
    """Each server on each length, in turn, ``plan.rounds`` times over; every phase after one warm-up per server and
    length. Returns, per length and server, every round's phase and its ok/s."""
    rows: dict[str, dict[str, Any]] = {str(words): {name: {"rounds": []} for name in servers} for words in messages}
    with phase("service: warm-up, every server on every length"):
        for texts in messages.values():
            for name, server in servers.items():
                asyncio.run(closed_loop(Target(server.url, _path(name), texts), plan.clients, plan.warmup_s))
    for index in range(plan.rounds):
        for words, texts in messages.items():
            for name, server in servers.items():
                row = _throughput(plan, server, _path(name), texts)
                rows[str(words)][name]["rounds"].append(row)
                say(
                    f"service round {index + 1}/{plan.rounds} · {name} · {words} words · {plan.clients} clients: "
                    f"{row['ok_per_s']:.1f} requests/s ({row['seconds']:.1f} s, {row['failed']} failed)"
                )
    for by_server in rows.values():
        for row in by_server.values():
            row["rounds_ok_per_s"] = [phase_row["ok_per_s"] for phase_row in row["rounds"]]
    return rows


def _path(server: str) -> str:
    return "/score" if server == "naive" else "/v1/score"


def run_reload(
    plan: ServicePlan, version: Path, messages: list[str], corpus: Path, work: Path, threads: int
) -> dict[str, Any]:
    """Activate ``plan.reload_repeats`` new versions, one after another, through the API of a running service while
    ``plan.reload_clients`` clients score: how long each activation took, how long until it served on its engine, and
    what failed meanwhile.

    Each new version is a copy of ``version`` under another name, never served before. Every other one is prepared
    first, as a training run prepares its candidate before it ends (``model.prepare_engine``, timed on its own); the
    others come as a version installed by hand would, unprepared: served on torch at once, their engine prepared in the
    background and swapped in.
    """
    seconds = [second_version(version, work / "versions", suffix) for suffix in "bcdefgh"[: plan.reload_repeats]]
    data = data_dir(work / "data-reload", version, extra=seconds)
    # In the registry (installing a version copies no cache), as the trainer prepares its candidate there.
    prepared = {other.name: _prepare(data / "models" / other.name, corpus, threads) for other in seconds[::2]}
    key = admin_key(data)
    with phase("reload: start the service"):
        server = _service(data, corpus, threads, work, "service-reload")
    repeats = []
    try:
        for index, other in enumerate(seconds):
            row = _reload(plan, server, messages, key, other.name) | {"prepared_s": prepared.get(other.name)}
            repeats.append(row)
            say(
                f"reload {index + 1}/{len(seconds)} · activate {other.name} "
                f"({'prepared' if other.name in prepared else 'not prepared'}) under {plan.reload_clients} clients: "
                f"{row['activation'].get('status')} in {row['activation'].get('seconds', float('nan')):.1f} s, "
                f"on {SCORE_ENGINE} after {row['engine_s']} s, "
                f"{row['requests']} requests, {row['failed'] + row['rejected_429']} failed"
            )
    finally:
        server.stop()
    return {"clients": plan.reload_clients, "repeats": repeats, "rss": server.memory()}


def _prepare(version: Path, corpus: Path, threads: int) -> float:
    """Prepare ``version``'s engine in a child, as a training run does for its candidate; the seconds it took."""
    from model.prepare_engine import engine_request

    request = {**(engine_request(SCORE_ENGINE, threads, corpus) or {}), "folder": str(version)}
    with phase(f"reload: prepare {version.name}'s engine, as a training run would"):
        started = time.perf_counter()
        with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
            json.dump(request, file)
            file.flush()
            subprocess.run(
                [sys.executable, "-m", "model.prepare_engine", file.name], cwd=ROOT, check=True, capture_output=True
            )
        return round(time.perf_counter() - started, 1)


def run_start(plan: ServicePlan, version: Path, message: str, corpus: Path, work: Path, threads: int) -> dict[str, Any]:
    """Process start → first ``GET /readyz`` 200: the first start of a fresh data directory (ready on torch; then
    how long until it serves on its engine, prepared in the background), then restarts on it (its ONNX cache and
    parity verdict now present), the naive baseline's start; and the wall time of a one-shot
    ``diplotone score "<message>"`` in a fresh process on that data directory."""
    data = data_dir(work / "data-start", version)
    results: dict[str, Any] = {}
    for key, label, count in (("first_start_s", "first start", 1), ("restart_s", "restart", plan.restarts)):
        results[key] = []
        for index in range(count):
            server = _service(data, corpus, threads, work, f"service-{key}-{index}")
            server.stop()
            if key == "first_start_s":
                results["first_on_engine_s"] = round(server.on_engine_s, 1)
            results[key].append(server.ready_s)
            say(f"start · {label} {index + 1}/{count}: ready in {server.ready_s:.1f} s")
    say(f"start · the first start served on {SCORE_ENGINE} after {results['first_on_engine_s']:.1f} s")
    naive = _naive(version, threads, work)
    naive.stop()
    results["naive_s"] = naive.ready_s
    say(f"start · naive baseline: ready in {naive.ready_s:.1f} s")
    command = [sys.executable, "-m", "diplotone", "score", message, "--data-dir", str(data)]
    results["cli_command"] = "python -m diplotone score <one 200-word message> --data-dir <the started data dir>"
    results["cli_s"] = []
    for index in range(plan.cli_repeats):
        results["cli_s"].append(_wall_time(command, threads))
        say(f"start · cold `diplotone score` {index + 1}/{plan.cli_repeats}: {results['cli_s'][-1]:.1f} s")
    return results


def until_on_engine(server: Server, engine: str = SCORE_ENGINE, limit_s: float = 900.0) -> float:
    """Seconds until ``server`` serves on ``engine`` (``/v1/info``); an error past ``limit_s``."""
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if httpx.get(f"{server.url}/v1/info", timeout=30).json().get("engine") == engine:
            return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError(f"the service did not serve on {engine} within {limit_s:.0f} s of being ready")


def _wall_time(command: list[str], threads: int) -> float:
    """Seconds from spawning ``command`` to its exit (an error if it fails), with the servers' thread budget."""
    env = {**os.environ, **thread_env(threads)}
    server_cpus, _ = cpu_plan(threads)
    if len(server_cpus) < len(os.sched_getaffinity(0)):  # on the servers' CPUs, as a server would be
        command = ["taskset", "-c", ",".join(map(str, server_cpus)), *command]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} exited with {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def second_version(version: Path, folder: Path, suffix: str = "b") -> Path:
    """A copy of ``version`` under another name (manifest ``version`` rewritten): something new to activate."""
    name = f"{version.name}-bench-{suffix}"
    target = folder / name
    shutil.copytree(version, target, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((target / "manifest.json").read_text())
    write_manifest(target, {**{k: v for k, v in manifest.items() if k != "files"}, "version": name})
    return target


def data_dir(folder: Path, version: Path, extra: Sequence[Path] = (), cache_from: Path | None = None) -> Path:
    """A service data directory whose registry holds ``version`` (active) and ``extra`` versions.

    ``cache_from`` copies a version's ONNX exports too, so the server skips the export (a restart, not a first start).
    """
    registry = Registry(folder / "models")
    installed = registry.install(version, version.name)
    for other in extra:
        registry.install(other, other.name)
    registry.activate(version.name)
    if cache_from is not None and (cache_from / "cache").is_dir():
        shutil.copytree(cache_from / "cache", installed / "cache")
    return folder


def admin_key(data: Path) -> str:
    """An admin API key in ``data``'s database, made with the CLI as an operator would."""
    return api_key(data, "admin")


def api_key(data: Path, scope: str, name: str = "bench") -> str:
    """An API key of ``scope`` in ``data``'s database, made with the CLI as an operator would."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "diplotone",
            "keys",
            "create",
            "--scope",
            scope,
            "--name",
            name,
            "--data-dir",
            str(data),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip().splitlines()[0]


def _service(data: Path, corpus: Path, threads: int, work: Path, name: str, **overrides: Any) -> Server:
    """Our service on ``data`` with the bench's engine and thread budget; ``overrides`` are more settings."""
    settings = {"data_dir": data, "corpus_dir": corpus, "engine": SCORE_ENGINE, "model_threads": threads, **overrides}
    env = {f"DIPLOTONE_{key.upper()}": str(value) for key, value in settings.items()}
    server = launch(name, SERVICE_APP, env, threads, work / "logs")
    try:  # ready comes on torch when the version's engine is not prepared yet: measure it on its engine
        server.on_engine_s = server.ready_s + until_on_engine(server)
    except Exception:
        server.stop()
        raise
    return server


def _throughput(plan: ServicePlan, server: Server, path: str, messages: list[str]) -> dict[str, Any]:
    """Successful requests per second with ``plan.clients`` closed-loop clients, after a warm-up; for our service,
    also how it batched (from its /metrics)."""
    target = Target(server.url, path, messages)
    asyncio.run(closed_loop(target, plan.clients, plan.warmup_s))
    before = _batch_counters(server) if path == "/v1/score" else None
    cpu_before = _cpu_seconds(server.process.pid), _cpu_seconds(os.getpid())
    summary = asyncio.run(closed_loop(target, plan.clients, plan.throughput_s)).summary()
    cpu_after = _cpu_seconds(server.process.pid), _cpu_seconds(os.getpid())
    result = {
        "clients": plan.clients,
        **summary,
        "server_cpu_cores": (cpu_after[0] - cpu_before[0]) / summary["seconds"],
        "load_generator_cpu_cores": (cpu_after[1] - cpu_before[1]) / summary["seconds"],
    }
    if before is not None:
        result["batching"] = _batching(before, _batch_counters(server), summary["seconds"])
    return result


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _batch_counters(server: Server) -> dict[str, float]:
    """The batcher's cumulative counters from the service's /metrics: batches, texts, seconds in Scorer.score."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "diplotone_batch_size_texts_count": "batches",
        "diplotone_batch_size_texts_sum": "texts",
        "diplotone_batch_duration_seconds_sum": "seconds",
    }
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {
        wanted[sample.name]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


def _batching(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict[str, float | None]:
    """Mean texts per model call, and the share of the phase the model worker spent in ``Scorer.score``."""
    batches, texts, seconds = (after[k] - before[k] for k in ("batches", "texts", "seconds"))
    return {
        "batches": batches,
        "texts_per_batch": texts / batches if batches else None,
        "model_busy_share": seconds / elapsed if elapsed > 0 else None,
    }


def _latency(plan: ServicePlan, server: Server, messages: list[str], max_rate: float) -> dict[str, Any]:
    """Alone, at 50% and 80% of ``max_rate`` (open loop), then 2× overload and what follows it."""
    target = Target(server.url, "/v1/score", messages)
    sampler = server.sampler
    calm_start = time.monotonic()
    alone = asyncio.run(closed_loop(target, 1, plan.alone_s)).summary()
    loads = {
        f"load_{share}": {
            "rate": max_rate * share / 100,
            **asyncio.run(open_loop(target, max_rate * share / 100, plan.load_s)).summary(),
        }
        for share in (50, 80)
    }
    before_mb = _mb(sampler.max_between(calm_start, time.monotonic()))
    overload_start = time.monotonic()
    overload = asyncio.run(open_loop(target, 2 * max_rate, plan.overload_s)).summary()
    overload_end = time.monotonic()
    recovery = asyncio.run(closed_loop(target, 1, plan.recovery_s)).summary()
    return {
        "max_rate": max_rate,
        "alone": alone,
        **loads,
        "overload": {
            "rate": 2 * max_rate,
            **overload,
            "rejected_429_share": overload["rejected_429"] / overload["requests"] if overload["requests"] else None,
            "rss_before_mb": before_mb,
            "rss_max_during_mb": _mb(sampler.max_between(overload_start, overload_end)),
        },
        "recovery": {
            **recovery,
            "rss_after_mb": _mb(sampler.max_between(overload_end, time.monotonic())),
            "p50_vs_alone": _ratio(recovery["p50_ms"], alone["p50_ms"]),
        },
    }


def _reload(plan: ServicePlan, server: Server, messages: list[str], key: str, version: str) -> dict[str, Any]:
    """Activate ``version`` through the API while ``plan.reload_clients`` clients score; count what failed."""
    return asyncio.run(_reload_async(plan, server, messages, key, version))


async def _reload_async(
    plan: ServicePlan, server: Server, messages: list[str], key: str, version: str
) -> dict[str, Any]:
    import httpx

    answered: list[float] = []
    activation: dict[str, Any] = {}
    on_engine: list[float] = []

    async def activate() -> None:
        await asyncio.sleep(min(2.0, plan.reload_tail_s))  # let the load settle first
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=plan.reload_limit_s) as http:
                response = await http.post(f"/v1/models/{version}/activate", headers={"X-API-Key": key})
                activation.update(status=response.status_code, body=response.json())
                answered.append(time.perf_counter())
                activation["seconds"] = answered[0] - started
                while time.perf_counter() - started < plan.reload_limit_s:  # until it serves on the engine asked for
                    info = (await http.get("/v1/info")).json()
                    if info.get("model_version") == version and info.get("engine") == SCORE_ENGINE:
                        on_engine.append(time.perf_counter() - started)
                        return
                    await asyncio.sleep(0.5)
        except (httpx.HTTPError, ValueError) as error:  # no answer, or not JSON: recorded, and the load stops
            activation.update(status=0, body=repr(error))
            activation.setdefault("seconds", time.perf_counter() - started)
            answered.append(time.perf_counter())

    def over() -> bool:
        ended = bool(on_engine) or activation.get("status") not in (None, 200)
        return ended and bool(answered) and time.perf_counter() > answered[0] + plan.reload_tail_s

    target = Target(server.url, "/v1/score", messages)
    load, _ = await asyncio.gather(
        closed_loop(target, plan.reload_clients, plan.reload_limit_s, keep_body=True, until=over), activate()
    )
    served = Counter(body["model_version"] for body in load.bodies)
    return {
        "clients": plan.reload_clients,
        "version": version,
        "activation": activation,
        "engine_s": round(on_engine[0], 1) if on_engine else None,
        **load.summary(),
        "served_versions": dict(served),
    }


def _refusals(server: Server) -> list[str]:
    """Lines of the server's log where an engine was refused (the Scorer logs them as warnings)."""
    return [line for line in server.log_tail(10_000).splitlines() if "refused" in line]


def _mb(value: int | None) -> float | None:
    return value / 2**20 if value is not None else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None
