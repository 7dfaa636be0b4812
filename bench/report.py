"""Targets as ratios of figures measured in the same run, and the results as JSON and a markdown table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from model.contract import write_atomically

LENGTH = "200"  # words per message of the model-only targets
SHORT = "30"  # words per message where batching should pay
RATIO = "ratio of figures measured side by side"
BOUND = "against a stated bound"  # a wall time, memory, latency or count: nothing to put beside it in the same run


def target(
    name: str,
    measured: float | None,
    op: str,
    threshold: float,
    note: str | None = None,
    values: list[float] | None = None,
    kind: str = RATIO,
    **inputs: Any,
) -> dict[str, Any]:
    """One target: ``measured op threshold``; ``ratio`` = measured / threshold; ``values`` are the rounds' (or the
    repeats') figures ``measured`` is the median of, ``spread`` their (max − min) ÷ median; ``inputs`` are what it
    came from; ``note`` qualifies the verdict (an engine the service does not serve, for one). A threshold of 0 (no
    failed request) has no ratio."""
    reached = None if measured is None else (measured >= threshold if op == ">=" else measured <= threshold)
    ratio = None if measured is None or threshold == 0 else measured / threshold
    return {
        "name": name,
        "kind": kind,
        "measured": measured,
        "op": op,
        "threshold": threshold,
        "ratio": ratio,
        "reached": reached,
        "values": values,
        "spread": spread(values),
        "note": note,
        "inputs": inputs,
    }


def quotient(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def spread(values: list[float] | None) -> float | None:
    """(max − min) ÷ median: how far apart the rounds of one figure were (0 for a single round)."""
    middle = median(values)
    return (max(values) - min(values)) / middle if values and middle else None


def per_round(numerators: list[float], denominators: list[float]) -> list[float]:
    """The ratio of two figures in each round (measured seconds apart, in turn)."""
    return [a / b for a, b in zip(numerators, denominators, strict=True) if b]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets whose sections ran, each computed from this run's figures."""
    rows: list[dict[str, Any]] = []
    if "model" in results:
        rows += _engine_targets(results)
    if "recipes" in results:
        rows += _recipe_targets(results["recipes"])
    if "service" in results:
        rows += _service_targets(results["service"], results.get("model"))
    if "service" in results or "reload" in results:
        highest = [results["service"]["rss"][k]["max_mb"] for k in ("service_batcher_on", "service_batcher_off")]
        highest = highest if "service" in results else []
        highest += [results["reload"]["rss"]["max_mb"]] if "reload" in results else []
        rss = max((mb for mb in highest if mb is not None), default=None)
        rows.append(target("service RSS ≤ 1 GB (max over the run, MB)", rss, "<=", 1024.0, kind=BOUND))
    if "reload" in results:
        rows += _reload_targets(results["reload"])
    if "start" in results:
        rows += _start_targets(results["start"])
    return rows


def _engine_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    engines, int8_gops = results["model"]["engines"], results["matmul"]["int8_gops"]
    int8, torch_row = engines["onnx-int8"], engines["torch"]["lengths"][LENGTH]
    row = int8["lengths"][LENGTH]
    gop_per_message = row["tokens_per_message"] * row["flop_per_token"] / 1e9
    shares = [rate * gop_per_message / int8_gops for rate in row["rounds_messages_per_s"]]
    ratios = per_round(row["rounds_messages_per_s"], torch_row["rounds_messages_per_s"])
    return [
        target(
            "int8 engine ≥ 60% of the int8 matmul limit (200 words, model only)",
            median(shares),
            ">=",
            0.60,
            values=shares,
            note=_refusal(int8),
            int8_matmul_gops=int8_gops,
            gop_per_message=gop_per_message,
        ),
        target(
            "int8 ÷ torch ≥ 2× (200 words, model only, messages/s)",
            median(ratios),
            ">=",
            2.0,
            values=ratios,
            note=_refusal(int8),
            int8_rounds=row["rounds_messages_per_s"],
            torch_rounds=torch_row["rounds_messages_per_s"],
        ),
        target(
            "int8 ÷ torch round-to-round spread < 15% ((max − min) ÷ median of the rounds' ratios)",
            spread(ratios),
            "<=",
            0.15,
            rounds=ratios,
        ),
    ]


def _recipe_targets(recipes: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.recipes import ALL_INT8, SHIPPED

    rows = recipes["recipes"]
    ratios = per_round(rows[ALL_INT8]["rounds_messages_per_s"], rows[SHIPPED]["rounds_messages_per_s"])
    return [
        target(
            f"previous all-int8 ÷ shipped int8 ≤ 1.5× ({recipes['messages_words']} words, model only, messages/s)",
            median(ratios),
            "<=",
            1.5,
            values=ratios,
            fp32_layers_shipped=rows[SHIPPED]["fp32_layers"],
        )
    ]


def _service_targets(service: dict[str, Any], model: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for words, needed in ((SHORT, 3.0), (LENGTH, 1.5)):
        phases = service["throughput"][words]
        ratios = per_round(phases["batcher_on"]["rounds_ok_per_s"], phases["naive"]["rounds_ok_per_s"])
        rows.append(
            target(
                f"service ≥ {needed:g}× the naive baseline ({words} words, {service['clients']} clients, requests/s)",
                median(ratios),
                ">=",
                needed,
                values=ratios,
                service_rounds=phases["batcher_on"]["rounds_ok_per_s"],
                naive_rounds=phases["naive"]["rounds_ok_per_s"],
            )
        )
    engine = service["engine_served"]
    model_p50 = model["engines"]["onnx-int8"]["lengths"][LENGTH]["single"]["p50_ms"] if model else None
    rows.append(
        target(
            "one 200-word message p50 ≤ 40 ms, int8 service, one client (HTTP round trip)",
            service["latency"]["alone"]["p50_ms"],
            "<=",
            40.0,
            note=None if engine == "onnx-int8" else f"served by {engine}",
            kind=BOUND,
            service_engine=engine,
            model_only_p50_ms=model_p50,
        )
    )
    overload = service["latency"]["overload"]
    limit = (service.get("limits") or {}).get("max_queue_wait_s")
    rows.append(
        target(
            "accepted requests p99 ≤ 2.5 s under 2× overload (200 words, Poisson, ms)",
            overload["p99_ms"],
            "<=",
            2500.0,
            kind=BOUND,
            accepted_p50_ms=overload["p50_ms"],
            rejected_429_share=overload.get("rejected_429_share"),
            max_queue_wait_s=limit,
        )
    )
    return rows


def _reload_targets(reload: dict[str, Any]) -> list[dict[str, Any]]:
    seconds = [r["activation"].get("seconds") for r in reload["repeats"]]
    answered = [s for s, r in zip(seconds, reload["repeats"], strict=True) if r["activation"].get("status") == 200]
    failed = sum(r["failed"] + r["rejected_429"] for r in reload["repeats"])
    refused = len(seconds) - len(answered)
    return [
        target(
            f"activation of a new version under load ≤ 20 s (median of {len(seconds)}, seconds)",
            median(answered) if not refused else None,
            "<=",
            20.0,
            values=answered,
            kind=BOUND,
            note=f"{refused} activation(s) not answered 200" if refused else None,
        ),
        target(
            "no failed request while activating (requests not answered 200)",
            float(failed),
            "<=",
            0.0,
            kind=BOUND,
            requests=sum(r["requests"] for r in reload["repeats"]),
        ),
    ]


def _start_targets(start: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label, bound in (
        ("first_start_s", "first start (fresh data directory) ≤ 15 s", 15.0),
        ("restart_s", "restart ≤ 3 s", 3.0),
        ("cli_s", '`diplotone score "one message"` from a cold process ≤ 3 s', 3.0),
    ):
        values = start[key]
        rows.append(
            target(
                f"{label} (median of {len(values)}, seconds)", median(values), "<=", bound, values=values, kind=BOUND
            )
        )
    if "first_on_engine_s" in start:  # readiness comes on torch; the engine is prepared in the background
        rows[0]["note"] = f"ready on torch; served on its engine after {start['first_on_engine_s']:.1f} s"
    return rows


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
    """Every figure of ``results`` as commit-friendly markdown tables, one part per section that ran."""
    parts = [_header(results), _targets(results["targets"])]
    if "model" in results:
        parts.append(_model(results))
    if "recipes" in results:
        parts.append(_recipes(results["recipes"]))
    if "service" in results:
        parts += [_service(results["service"]), _latency(results["service"])]
    if "reload" in results:
        parts.append(_reload(results["reload"]))
    if "start" in results:
        parts.append(_start(results["start"]))
    return "\n\n".join(parts) + "\n"


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


def _cells(values: list[float] | None) -> str:
    return ", ".join(_cell(value) for value in values) if values else "–"


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def _header(results: dict[str, Any]) -> str:
    from bench.run import SECTIONS

    meta = results["meta"]
    quick = " — **quick smoke run, figures not meaningful**" if meta["quick"] else ""
    ran = meta["sections"]
    partial = "" if ran == list(SECTIONS) else f" — **partial run**: only {', '.join(ran)} (of {', '.join(SECTIONS)})"
    lines = [
        f"# diplotone benchmark{quick}",
        "",
        f"`{meta['command']}` · model `{meta['version']}` · {meta['started']} · {meta['seconds']:.0f} s · "
        f"commit `{meta['commit']}`",
        "",
        f"Sections run: {', '.join(ran)}{partial}.",
        "",
        f"Machine: {meta['cpu']} · {meta['cpus']} CPUs · {meta['threads']} model threads · torch {meta['torch']} · "
        f"onnxruntime {meta['onnxruntime']}. Load average at the start: {meta['load_average_at_start']:.2f}.",
    ]
    if "matmul" in results:
        matmul = results["matmul"]
        lines[-1] += (
            f" fp32 matmul limit ({matmul['size']}², {matmul['threads']} threads, best of {matmul['runs']}): "
            f"**{matmul['gflops']:.1f} GFLOP/s** (median {matmul['median_gflops']:.1f}); "
            f"{_cell(matmul.get('end_gflops'))} GFLOP/s again at the end of the run. int8 matmul limit (ONNX Runtime "
            f"MatMulInteger, {matmul['size']}²): {_cell(matmul.get('int8_gops'))} GOP/s."
        )
    return "\n".join(lines)


def _targets(rows: list[dict[str, Any]]) -> str:
    body = [
        [
            row["name"],
            row["measured"],
            f"{row['op']} {_cell(row['threshold'])}",
            row["ratio"],
            _cells(row["values"]),
            _percent(row["spread"]),
            row["kind"],
            _verdict(row),
        ]
        for row in rows
    ]
    head = ["target", "measured (median)", "needs", "measured ÷ needed", "rounds / repeats", "spread", "kind", "result"]
    return (
        "## Targets\n\n"
        + _table(head, body)
        + f"\n\nSpread: (max − min) ÷ median of the rounds or repeats. A *{RATIO}* is taken in each round from "
        + f"figures measured in turn seconds apart; a figure measured *{BOUND}* (a wall time, memory, latency, count) "
        + "has nothing to put beside it in the same run: it is read against the issue's bound, and wall times move "
        + "with the machine."
    )


def _verdict(row: dict[str, Any]) -> str:
    verdict = "reached" if row["reached"] else "not measured" if row["reached"] is None else "**missed**"
    return f"{verdict}; {row['note']}" if row["note"] else verdict


def _model(results: dict[str, Any]) -> str:
    int8_gops = results["matmul"]["int8_gops"]
    rows = []
    for name, engine in results["model"]["engines"].items():
        for words, row in engine["lengths"].items():
            rows.append(
                [
                    name if engine["served"] == name else f"{name} (served {engine['served']})",
                    words,
                    row["tokens_per_message"],
                    row["messages_per_s"],
                    _cells(row["rounds_messages_per_s"]),
                    _percent(spread(row["rounds_messages_per_s"])),
                    row["tokens_per_s"],
                    row["gflops"],
                    f"{100 * row['efficiency']:.0f}%",
                    _percent(row["gflops"] / int8_gops) if name == "onnx-int8" else "–",
                    row["single"]["p50_ms"],
                ]
            )
    head = [
        "engine",
        "words",
        "tokens/message",
        "messages/s (median round)",
        "rounds",
        "spread",
        "tokens/s",
        "GFLOP/s",
        "of the fp32 limit",
        "of the int8 limit",
        "one message p50 ms",
    ]
    parity = [
        f"- {name}: {json.dumps(engine['report'], sort_keys=True)}"
        for name, engine in results["model"]["engines"].items()
    ]
    return (
        "## Model only (Scorer.predict, no HTTP)\n\n"
        + _table(head, rows)
        + "\n\nEngines measured in turn, round after round; each row is the median round. For int8 the same FLOP are "
        + "counted against each limit (fp32-equivalent work, so int8 can pass 100% of the fp32 one)."
        + "\n\nEngine reports (parity against torch on the test split):\n\n"
        + "\n".join(parity)
    )


def _recipes(recipes: dict[str, Any]) -> str:
    from bench.recipes import SHIPPED

    shipped = median(recipes["recipes"][SHIPPED]["rounds_messages_per_s"])
    rows = []
    for name, row in recipes["recipes"].items():
        rate, gap = median(row["rounds_messages_per_s"]), row["parity_vs_fp32"]
        layers = row["fp32_layers"]
        rows.append(
            [
                name if layers is None else f"{name} (fp32 layers: {', '.join(map(str, layers)) or 'none'})",
                rate,
                _cells(row["rounds_messages_per_s"]),
                _percent(spread(row["rounds_messages_per_s"])),
                quotient(rate, shipped),
                gap["max_abs_diff"],
                f"{gap['spearman']:.5f}",
            ]
        )
    head = ["recipe", "messages/s (median)", "rounds", "spread", "÷ shipped int8", "largest gap to fp32", "Spearman"]
    return (
        f"## int8 recipes ({recipes['messages_words']}-word messages, model only)\n\n"
        + _table(head, rows)
        + "\n\nOne Scorer, its encoder swapped between recipes; measured in turn, round after round. Parity: score "
        + f"points against onnx-fp32 on the {recipes['parity_texts']} test-split texts (int8 may serve with a largest "
        + "gap ≤ 2 and Spearman ≥ 0.995)."
    )


def _service(service: dict[str, Any]) -> str:
    head = ["server", "words", "ok/s (median round)", "rounds", "spread", "failed", "p50 ms", "p99 ms"]
    head += ["texts per model call", "server CPU cores", "client CPU cores"]
    labels = {
        "batcher_on": f"service, batcher on ({service['engine_served']})",
        "batcher_off": f"service, batcher off ({service['engine_served']})",
        "naive": "naive FastAPI + transformers pipeline (torch)",
    }
    rows = []
    for words, by_server in service["throughput"].items():
        for name, row in by_server.items():
            rates = row["rounds_ok_per_s"]
            middle = sorted(row["rounds"], key=lambda r: r["ok_per_s"])[(len(rates) - 1) // 2]
            batching = middle.get("batching") or {}
            rows.append(
                [
                    labels[name],
                    words,
                    median(rates),
                    _cells(rates),
                    _percent(spread(rates)),
                    sum(r["failed"] for r in row["rounds"]),
                    middle["p50_ms"],
                    middle["p99_ms"],
                    batching.get("texts_per_batch"),
                    middle["server_cpu_cores"],
                    middle["load_generator_cpu_cores"],
                ]
            )
    rss = [
        f"{name} at ready {_cell(memory['at_ready_mb'])} MB, max {_cell(memory['max_mb'])} MB"
        for name, memory in service["rss"].items()
    ]
    ready = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in service["ready_s"].items())
    return (
        f"## Service throughput ({service['clients']} closed-loop clients)\n\n"
        + _table(head, rows)
        + "\n\nThe three servers are up together and measured in turn, round after round (only one under load at a "
        + "time); p50, p99, texts per model call (from the service's /metrics) and CPU are the median round's. RSS: "
        + "; ".join(rss)
        + f". Ready after: {ready} (the first on a fresh data directory)."
    )


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
    share = overload.get("rejected_429_share")
    limit = (service.get("limits") or {}).get("max_queue_wait_s")
    notes = (
        f"Under 2× overload the accepted requests (200) took p50 {_cell(overload['p50_ms'])} ms and p99 "
        f"{_cell(overload['p99_ms'])} ms from their arrival (target p99 ≤ 2,500 ms); "
        f"{_percent(share)} of the requests sent were refused with 429 "
        f"(admission by expected wait, max_queue_wait_s {_cell(limit)} s, and the queue's size). "
        f"Max rate (batcher on, 32 clients, median round): {latency['max_rate']:.1f}/s. RSS before the overload "
        f"{_cell(overload['rss_before_mb'])} MB, max during it {_cell(overload['rss_max_during_mb'])} MB, after "
        f"{_cell(recovery['rss_after_mb'])} MB; p50 after ÷ p50 before: {_cell(recovery['p50_vs_alone'])}."
    )
    lines = ["## Latency (service, batcher on, 200-word messages)", "", _table(head, rows), "", notes]
    if service.get("engine_log"):
        lines += ["", "Engine refusals in the service log:", "", *[f"    {line}" for line in service["engine_log"]]]
    return "\n".join(lines)


def _reload(reload: dict[str, Any]) -> str:
    head = [
        "activated",
        "prepared beforehand (s)",
        "status",
        "activation s",
        "on its engine after s",
        "requests",
        "failed",
        "versions that answered",
        "p99 ms",
    ]
    rows = [
        [
            row["version"],
            row.get("prepared_s") or "no",
            row["activation"].get("status"),
            row["activation"].get("seconds"),
            row.get("engine_s"),
            row["requests"],
            row["failed"] + row["rejected_429"],
            json.dumps(row["served_versions"]),
            row["p99_ms"],
        ]
        for row in reload["repeats"]
    ]
    return (
        f"## Reload under load ({reload['clients']} closed-loop clients, 200-word messages)\n\n"
        + _table(head, rows)
        + "\n\nEach activated version is a copy of the one under test under a new name, installed in the registry "
        + "before the server started and never served before. A prepared one had its engine prepared first, as a "
        + "training run prepares its candidate (timed on its own, off the serving path); an unprepared one is served "
        + "on "
        + "torch at once and swapped onto its engine once that is prepared in the background. "
        + f"Server RSS max {_cell(reload['rss']['max_mb'])} MB."
    )


def _start(start: dict[str, Any]) -> str:
    rows = [
        [
            "service, first start of a fresh data directory (ONNX export + parity check + probe)",
            _cells(start["first_start_s"]),
        ],
        ["service, restart (ONNX files and parity verdict cached)", _cells(start["restart_s"])],
        ["naive baseline", _cell(start["naive_s"])],
        [f"`{start['cli_command']}` (exit)", _cells(start["cli_s"])],
    ]
    return (
        "## Start\n\n"
        + _table(["process start → /readyz 200 (or exit)", "seconds, each repeat"], rows)
        + "\n\nWall times from spawning the process, with the thread budget of the servers; the OS file cache is "
        + "warm (the model files were read moments before), as on a machine that has run the service before."
    )
