"""Targets as ratios of figures measured in the same run, and the results as JSON and a markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.contract import write_atomically

LENGTH = "200"  # words per message of the targets


def target(
    name: str, measured: float | None, op: str, threshold: float, note: str | None = None, **inputs: Any
) -> dict[str, Any]:
    """One target: ``measured op threshold``; ``ratio`` = measured / threshold; ``inputs`` are what it came from;
    ``note`` qualifies the verdict (an engine the service does not serve, for one)."""
    reached = None if measured is None else (measured >= threshold if op == ">=" else measured <= threshold)
    ratio = None if measured is None else measured / threshold
    return {
        "name": name,
        "measured": measured,
        "op": op,
        "threshold": threshold,
        "ratio": ratio,
        "reached": reached,
        "note": note,
        "inputs": inputs,
    }


def quotient(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each computed from this run's figures."""
    service, engines = results["service"], results["model"]["engines"]
    on, off, naive = (service[k]["ok_per_s"] for k in ("batcher_on", "batcher_off", "naive"))
    torch_rate = engines["torch"]["lengths"][LENGTH]["messages_per_s"]
    int8 = engines["onnx-int8"]
    int8_rate = int8["lengths"][LENGTH]["messages_per_s"]
    alone_p50 = service["latency"]["alone"]["p50_ms"]
    rss = max(service["rss"][k]["max_mb"] or 0.0 for k in ("service_batcher_on", "service_batcher_off"))
    ceiling = _int8_ceiling(results, naive)
    batching_gain = quotient(int8_rate, 1000.0 / int8["lengths"][LENGTH]["single"]["p50_ms"])
    rows = [
        target(
            "service ≥ 5× the naive baseline (32 clients, requests/s)",
            quotient(on, naive),
            ">=",
            5.0,
            note=None if ceiling is None else f"{ceiling:.1f}× if every multiply ran at the int8 matmul limit",
            service_per_s=on,
            naive_per_s=naive,
            int8_ceiling=ceiling,
        ),
        target(
            "batcher on ≥ 3× batcher off (32 clients, requests/s)",
            quotient(on, off),
            ">=",
            3.0,
            note=None
            if batching_gain is None
            else f"the int8 model alone gains {batching_gain:.1f}× from batching (batched ÷ one at a time)",
            batcher_on_per_s=on,
            batcher_off_per_s=off,
            batching_gain=batching_gain,
        ),
        target(
            "int8 ≥ 2× torch fp32 (model only, messages/s)",
            quotient(int8_rate, torch_rate),
            ">=",
            2.0,
            note=_refusal(int8),
            int8_per_s=int8_rate,
            torch_per_s=torch_rate,
        ),
    ]
    for name in ("torch", "onnx-fp32"):
        row = engines[name]["lengths"][LENGTH]
        rows.append(
            target(
                f"{name} engine ≥ 60% of the fp32 matmul limit (model only)",
                row["efficiency"],
                ">=",
                0.60,
                gflops=row["gflops"],
                matmul_gflops=results["matmul"]["gflops"],
            )
        )
    rows += [
        target(
            "one message p50 ≤ 40 ms, int8 service, one client (HTTP round trip)",
            alone_p50,
            "<=",
            40.0,
            note=None if service["engine_served"] == "onnx-int8" else f"served by {service['engine_served']}",
            service_engine=service["engine_served"],
            model_only_p50_ms=int8["lengths"][LENGTH]["single"]["p50_ms"],
        ),
        target("service RSS ≤ 1 GB (max over the run, MB)", rss, "<=", 1024.0),
    ]
    return rows


def _int8_ceiling(results: dict[str, Any], naive_per_s: float | None) -> float | None:
    """An upper bound on service ÷ naive: 200-word messages per second if all of a message's FLOP ran at the int8
    matmul limit (no attention softmax, norms, quantization or Python), divided by the naive rate."""
    int8_gops = results["matmul"].get("int8_gops")
    row = results["model"]["engines"]["onnx-int8"]["lengths"][LENGTH]
    if not int8_gops or not naive_per_s:
        return None
    per_message = row["tokens_per_message"] * row["flop_per_token"] / 1e9  # GFLOP
    return float(int8_gops / per_message / naive_per_s)


def _refusal(engine: dict[str, Any]) -> str | None:
    """Why the parity check refused this engine and what the service serves instead; None if it was accepted."""
    refused = engine["report"].get("refused")
    if not refused:
        return None
    return f"refused by the parity check ({'; '.join(refused.values())}); the service serves {engine['served']}"


def write(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` under ``out``, each replaced in one step."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "latest.json", out / "latest.md"
    for path, text in zip(paths, (json.dumps(results, indent=2) + "\n", markdown(results)), strict=True):
        write_atomically(path, text)
    return paths


def markdown(results: dict[str, Any]) -> str:
    """Every figure of ``results`` as commit-friendly markdown tables."""
    sections = [
        _header(results),
        _targets(results["targets"]),
        _model(results),
        _service(results["service"]),
        _latency(results["service"]),
        _operations(results["service"]),
    ]
    return "\n\n".join(sections) + "\n"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
    return str(value)


def _header(results: dict[str, Any]) -> str:
    meta, matmul = results["meta"], results["matmul"]
    quick = " — **quick smoke run, figures not meaningful**" if meta["quick"] else ""
    return "\n".join(
        [
            f"# diplotone benchmark{quick}",
            "",
            f"`{meta['command']}` · model `{meta['version']}` · {meta['started']} · {meta['seconds']:.0f} s · "
            f"commit `{meta['commit']}`",
            "",
            f"Machine: {meta['cpu']} · {meta['cpus']} CPUs · {meta['threads']} model threads · torch {meta['torch']} · "
            f"onnxruntime {meta['onnxruntime']}. fp32 matmul limit ({matmul['size']}², {matmul['threads']} threads, "
            f"best of {matmul['runs']}): **{matmul['gflops']:.1f} GFLOP/s** (median {matmul['median_gflops']:.1f}); "
            f"{matmul['end_gflops']:.1f} GFLOP/s again at the end of the run. int8 matmul limit (ONNX Runtime "
            f"MatMulInteger, {matmul['size']}²): {_cell(matmul.get('int8_gops'))} GOP/s. Load average at the start: "
            f"{meta['load_average_at_start']:.2f}.",
        ]
    )


def _targets(rows: list[dict[str, Any]]) -> str:
    body = [
        [row["name"], row["measured"], f"{row['op']} {_cell(row['threshold'])}", row["ratio"], _verdict(row)]
        for row in rows
    ]
    return "## Targets\n\n" + _table(["target", "measured", "needs", "measured ÷ needed", "result"], body)


def _verdict(row: dict[str, Any]) -> str:
    verdict = "reached" if row["reached"] else "not measured" if row["reached"] is None else "**missed**"
    return f"{verdict}; {row['note']}" if row["note"] else verdict


def _model(results: dict[str, Any]) -> str:
    rows = []
    for name, engine in results["model"]["engines"].items():
        for words, row in engine["lengths"].items():
            rows.append(
                [
                    name if engine["served"] == name else f"{name} (served {engine['served']})",
                    words,
                    row["tokens_per_message"],
                    row["messages_per_s"],
                    row["tokens_per_s"],
                    row["flop_per_token"] / 1e6,
                    row["gflops"],
                    f"{100 * row['efficiency']:.0f}%",
                    row["single"]["p50_ms"],
                ]
            )
    head = [
        "engine",
        "words",
        "tokens/message",
        "messages/s",
        "tokens/s",
        "MFLOP/token",
        "GFLOP/s",
        "efficiency",
        "one message p50 ms",
    ]
    parity = [
        f"- {name}: {json.dumps(engine['report'], sort_keys=True)}"
        for name, engine in results["model"]["engines"].items()
    ]
    rounds = [
        f"{name} {', '.join(_cell(rate) for rate in engine['lengths'][LENGTH].get('rounds_messages_per_s', []))}"
        for name, engine in results["model"]["engines"].items()
    ]
    return (
        "## Model only (Scorer.predict, no HTTP)\n\n"
        + _table(head, rows)
        + f"\n\nEngines measured in turn, round after round; each row is the median round. {LENGTH}-word "
        + "messages/s by round: "
        + "; ".join(rounds)
        + "."
        + "\n\nEngine reports (parity against torch on the test split):\n\n"
        + "\n".join(parity)
    )


def _service(service: dict[str, Any]) -> str:
    head = [
        "server",
        "clients",
        "requests",
        "ok/s",
        "429",
        "failed",
        "p50 ms",
        "p99 ms",
        "server CPU cores",
        "client CPU cores",
        "RSS at ready MB",
        "RSS max MB",
    ]
    rows = [
        [
            label,
            s["clients"],
            s["requests"],
            s["ok_per_s"],
            s["rejected_429"],
            s["failed"],
            s["p50_ms"],
            s["p99_ms"],
            s["server_cpu_cores"],
            s["load_generator_cpu_cores"],
            service["rss"][rss]["at_ready_mb"],
            service["rss"][rss]["max_mb"],
        ]
        for label, s, rss in (
            (f"service, batcher on ({service['engine_served']})", service["batcher_on"], "service_batcher_on"),
            (f"service, batcher off ({service['engine_served']})", service["batcher_off"], "service_batcher_off"),
            ("naive FastAPI + transformers pipeline (torch)", service["naive"], "naive"),
        )
    ]
    notes = [
        f"{label}: {_cell(service[key]['batching']['texts_per_batch'])} texts per model call, worker in "
        f"Scorer.score {_percent(service[key]['batching']['model_busy_share'])} of the time"
        for label, key in (("batcher on", "batcher_on"), ("batcher off", "batcher_off"))
    ]
    return (
        f"## Service throughput ({service['messages_words']}-word messages, closed loop)\n\n"
        + _table(head, rows)
        + "\n\n"
        + "; ".join(notes)
        + " (from the service's /metrics)."
    )


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def _latency(service: dict[str, Any]) -> str:
    latency = service["latency"]
    head = ["phase", "offered /s", "requests", "ok/s", "429", "failed", "p50 ms", "p99 ms", "max ms"]
    rows = []
    phases = {
        "alone": "one client",
        "load_50": "50% of max, Poisson",
        "load_80": "80% of max, Poisson",
        "overload": "2× max, Poisson",
        "recovery": "one client, after overload",
    }
    for phase, label in phases.items():
        s = latency[phase]
        failed = s["failed"] + s["client_dropped"]
        rows.append(
            [
                label,
                s.get("rate"),
                s["requests"],
                s["ok_per_s"],
                s["rejected_429"],
                failed,
                s["p50_ms"],
                s["p99_ms"],
                s["max_ms"],
            ]
        )
    overload, recovery = latency["overload"], latency["recovery"]
    notes = (
        f"Max rate (batcher on, 32 clients): {latency['max_rate']:.1f}/s. RSS before the overload "
        f"{_cell(overload['rss_before_mb'])} MB, max during it {_cell(overload['rss_max_during_mb'])} MB, after "
        f"{_cell(recovery['rss_after_mb'])} MB; p50 after ÷ p50 before: {_cell(recovery['p50_vs_alone'])}."
    )
    return "## Latency (service, batcher on)\n\n" + _table(head, rows) + "\n\n" + notes


def _operations(service: dict[str, Any]) -> str:
    cold, reload = service["cold_start"], service["reload"]
    activation = reload["activation"]
    rows = [
        ["cold start, first start of a fresh data dir (ONNX export + parity check + probe)", cold["first_start_s"]],
        ["restart (ONNX cache present)", cold.get("restart_s")],
        ["naive baseline start", cold.get("naive_s")],
    ]
    lines = [
        "## Operations",
        "",
        _table(["process start → /readyz 200", "seconds"], rows),
        "",
        f"Reload under load: {reload['clients']} clients scoring while `POST /v1/models/{reload['version']}/activate` "
        f"ran ({activation.get('status')}, {_cell(activation.get('seconds'))} s): {reload['requests']} requests, "
        f"**{reload['failed'] + reload['rejected_429']} failed**, versions served {reload['served_versions']}, "
        f"p99 {_cell(reload['p99_ms'])} ms.",
    ]
    if service.get("engine_log"):
        lines += ["", "Engine refusals in the service log:", "", *[f"    {line}" for line in service["engine_log"]]]
    return "\n".join(lines)
