"""``python -m bench.soak`` (``make soak``): the service under a long, mixed, open-loop load; errors, latency, memory.

python -m bench.soak                                   # 5 minutes at 80% of the highest scoring rate, shipped model
python -m bench.soak --seconds 20                      # a short check that the machinery works
python -m bench.soak --rate 30 --seconds 600           # a given rate instead of the measured one

It starts the service with uvicorn on a free loopback port (a fresh data directory holding the model version, its
own SQLite database and API keys of scopes ``label`` and ``read``, made with the CLI), finds the highest scoring rate
it sustains (``--probe-seconds`` of closed-loop scoring by 32 clients, unless ``--rate`` gives one), then sends Poisson
arrivals at ``--rate-fraction`` of that rate for ``--seconds``: scoring most, message writes each followed by a label,
and reads (a list, one message, a relation's timeline). Latency counts from the scheduled arrival, as in
``bench.load``.

Any 5xx, transport failure or status a kind should not get counts as an error; a 429 (back-pressure on the kinds that
score, ``score`` and ``write``) is counted apart. Resident memory of the server is read when the mix starts and when
its last answer is in. Writes ``soak.json`` and ``soak.md`` under ``--out``, prints progress to stderr every 10 s and
the report to stdout, and exits 1 if there was any error or the RSS grew by 10% or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.__main__ import RESULTS, shipped_version
from bench.load import REQUEST_TIMEOUT_S, Target, closed_loop, percentile, poisson_schedule
from bench.progress import phase, say
from bench.servers import Server, launch
from bench.service_bench import SERVICE_APP, api_key, data_dir, until_on_engine
from bench.texts import CORPUS, corpus_texts, messages_of
from service.settings import Settings

WORDS = 200  # words per scored or stored message: the bench's usual length
PROBE_CLIENTS = 32
MAX_IN_FLIGHT = 1024
RSS_GROWTH_LIMIT_PCT = 10.0
PROGRESS_EVERY_S = 10.0
# What an arrival is, by share; each write is followed by a label of the message it stored (its own kind).
MIX = {"score": 0.70, "write": 0.10, "list": 0.07, "get": 0.07, "timeline": 0.06}
KINDS = ("score", "write", "label", "list", "get", "timeline")
EXPECTED = {"score": 200, "write": 201, "label": 200, "list": 200, "get": 200, "timeline": 200}
BACK_PRESSURE = {"score", "write"}  # they score through the batcher, where a 429 is the service refusing more work
RELATIONS = [("Kim Jong Un", "Vladimir Putin"), ("Vladimir Putin", "Kim Jong Un"), ("Xi Jinping", "Kim Jong Un")]


@dataclass
class Keys:
    label: str  # writes and labels
    read: str  # lists, messages, timelines


@dataclass
class Tally:
    """Every answer of the mix: per kind, (seconds from the scheduled arrival, status; 0 = no answer)."""

    answers: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    client_dropped: int = 0  # arrivals not sent because MAX_IN_FLIGHT requests were still unanswered
    stored: list[int] = field(default_factory=list)  # ids of the messages written, for reads of one message

    def add(self, kind: str, seconds: float, status: int) -> None:
        self.answers[kind].append((seconds, status))

    def errors(self) -> int:
        return sum(_kind(kind, answers)["errors"] for kind, answers in self.answers.items())

    def rejected(self) -> int:
        return sum(_kind(kind, answers)["rejected_429"] for kind, answers in self.answers.items())

    def requests(self) -> int:
        return sum(len(answers) for answers in self.answers.values())

    def summary(self) -> dict[str, dict[str, Any]]:
        return {kind: _kind(kind, answers) for kind, answers in self.answers.items()}


def _kind(kind: str, answers: list[tuple[float, int]]) -> dict[str, Any]:
    """Counts by status, errors, 429s and latency percentiles of the answers with the status the kind expects."""
    ok = sorted(seconds for seconds, status in answers if status == EXPECTED[kind])
    statuses = Counter(status for _, status in answers)
    rejected = statuses[429] if kind in BACK_PRESSURE else 0
    return {
        "requests": len(answers),
        "ok": len(ok),
        "status": {str(status): count for status, count in sorted(statuses.items())},
        "rejected_429": rejected,
        "errors": len(answers) - len(ok) - rejected,
        "p50_ms": 1000 * percentile(ok, 50) if ok else None,
        "p99_ms": 1000 * percentile(ok, 99) if ok else None,
        "max_ms": 1000 * ok[-1] if ok else None,
    }


def verdict(errors: int, rss_growth_pct: float | None) -> list[str]:
    """Why the soak failed (empty: it passed)."""
    reasons = []
    if errors:
        reasons.append(f"{errors} errors: expected none")
    if rss_growth_pct is None:
        reasons.append("the server's RSS could not be read at the start and the end")
    elif rss_growth_pct >= RSS_GROWTH_LIMIT_PCT:
        reasons.append(f"RSS grew by {rss_growth_pct:.1f}%: expected under {RSS_GROWTH_LIMIT_PCT:.0f}%")
    return reasons


class Mix:
    """The open-loop mix against one server: Poisson arrivals, each of a kind drawn from ``MIX``."""

    def __init__(self, server: Server, keys: Keys, texts: list[str], seed: int = 0) -> None:
        self.server, self.keys, self.texts = server, keys, texts
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.writes = 0

    async def run(self, rate: float, seconds: float) -> Tally:
        arrivals = poisson_schedule(rate, seconds, self.rng)
        kinds = self.rng.choices(list(MIX), weights=list(MIX.values()), k=len(arrivals))
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
        started = time.perf_counter()
        in_flight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(base_url=self.server.url, limits=limits, timeout=REQUEST_TIMEOUT_S) as http:
            progress = asyncio.create_task(self._progress(started, seconds))
            for index, (offset, kind) in enumerate(zip(arrivals, kinds, strict=True)):
                origin = started + offset
                await asyncio.sleep(max(0.0, origin - time.perf_counter()))
                if len(in_flight) >= MAX_IN_FLIGHT:
                    self.tally.client_dropped += 1
                    continue
                task = asyncio.create_task(self._send(http, kind, index, origin))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(in_flight)  # each is bounded by REQUEST_TIMEOUT_S
            progress.cancel()
        return self.tally

    async def _send(self, http: httpx.AsyncClient, kind: str, index: int, origin: float) -> None:
        text = self.texts[index % len(self.texts)]
        if kind == "get" and not self.tally.stored:
            kind = "list"  # nothing stored yet to read one of
        try:
            response = await self._request(http, kind, text)
            status = response.status_code
        except httpx.HTTPError:
            response, status = None, 0
        self.tally.add(kind, time.perf_counter() - origin, status)
        if kind == "write" and response is not None and status == EXPECTED["write"]:
            message_id = int(response.json()["id"])
            self.tally.stored.append(message_id)
            sent = time.perf_counter()
            try:
                status = (await self._label(http, message_id)).status_code
            except httpx.HTTPError:
                status = 0
            self.tally.add("label", time.perf_counter() - sent, status)

    async def _request(self, http: httpx.AsyncClient, kind: str, text: str) -> httpx.Response:
        read = {"X-API-Key": self.keys.read}
        sender, recipient = self.rng.choice(RELATIONS)
        if kind == "score":
            return await http.post("/v1/score", json={"text": text})
        if kind == "write":
            self.writes += 1
            day = date(2000, 1, 1) + timedelta(days=self.writes)
            message = {"text": text, "sender": sender, "recipient": recipient, "date": day.isoformat()}
            return await http.post("/v1/messages", json=message, headers={"X-API-Key": self.keys.label})
        if kind == "list":
            return await http.get("/v1/messages", params={"limit": 50, "sender": sender}, headers=read)
        if kind == "get":
            return await http.get(f"/v1/messages/{self.rng.choice(self.tally.stored)}", headers=read)
        return await http.get("/v1/timeline", params={"sender": sender, "recipient": recipient}, headers=read)

    async def _label(self, http: httpx.AsyncClient, message_id: int) -> httpx.Response:
        label = {"annotator": "soak", "score": round(self.rng.uniform(0, 100), 1)}
        return await http.put(f"/v1/messages/{message_id}/label", json=label, headers={"X-API-Key": self.keys.label})

    async def _progress(self, started: float, seconds: float) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            tally = self.tally
            say(
                f"soak {time.perf_counter() - started:4.0f}/{seconds:.0f} s: {tally.requests()} answered, "
                f"{tally.errors()} errors, {tally.rejected()} × 429, RSS {_rss_mb(self.server) or float('nan'):.0f} MB"
            )


def _rss_mb(server: Server) -> float | None:
    try:
        return float(psutil.Process(server.process.pid).memory_info().rss / 2**20)
    except psutil.Error:
        return None


def probe_rate(server: Server, texts: list[str], seconds: float) -> dict[str, Any]:
    """The highest scoring rate the server sustains: ok/s of ``PROBE_CLIENTS`` closed-loop clients, after a warm-up."""
    target = Target(server.url, "/v1/score", texts)
    asyncio.run(closed_loop(target, PROBE_CLIENTS, min(5.0, seconds)))
    summary = asyncio.run(closed_loop(target, PROBE_CLIENTS, seconds)).summary()
    return {"clients": PROBE_CLIENTS, **summary}


def soak(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Start the service, find or take the rate, run the mix; the whole result."""
    version = (args.version or shipped_version()).resolve()
    texts = messages_of(WORDS, corpus_texts(args.corpus), 64)
    work = Path(tempfile.mkdtemp(prefix="diplotone-soak-"))
    say(f"soak on {version.name}; working in {work}")
    data = data_dir(work / "data", version)
    keys = Keys(label=api_key(data, "label", "soak"), read=api_key(data, "read", "soak"))
    settings = {"data_dir": data, "corpus_dir": args.corpus.resolve().parent, "model_threads": args.threads}
    if args.engine:
        settings["engine"] = args.engine
    env = {f"DIPLOTONE_{key.upper()}": str(value) for key, value in settings.items()}
    started = datetime.now(UTC)
    with phase("soak: start the service"):
        server = launch("soak", SERVICE_APP, env, args.threads, work / "logs")
    try:
        with phase("soak: wait until it serves on its engine (prepared in the background on a first start)"):
            until_on_engine(server, settings.get("engine", Settings().engine))
        info = httpx.get(f"{server.url}/v1/info", timeout=30).json()
        if args.rate is not None:
            probe, highest = None, args.rate
        else:
            with phase(f"soak: the highest scoring rate ({args.probe_seconds:.0f} s, {PROBE_CLIENTS} clients)"):
                probe = probe_rate(server, texts, args.probe_seconds)
            highest = probe["ok_per_s"]
            say(f"soak: highest scoring rate {highest:.1f}/s")
        rate = args.rate_fraction * highest
        if rate <= 0:
            raise SystemExit(f"expected a positive rate to soak at; found {rate:g}/s (is the service scoring?)")
        rss_start = _rss_mb(server)
        with phase(f"soak: {args.seconds:.0f} s of the mix at {rate:.1f} arrivals/s"):
            mix_started = time.monotonic()
            tally = asyncio.run(Mix(server, keys, texts, seed=args.seed).run(rate, args.seconds))
            mix_seconds = time.monotonic() - mix_started
        rss_end = _rss_mb(server)
        rss_max = server.sampler.max_between(mix_started, time.monotonic())
    finally:
        server.stop()
    growth = 100 * (rss_end - rss_start) / rss_start if rss_start and rss_end is not None else None
    reasons = verdict(tally.errors(), growth)
    return {
        "meta": {
            "command": command,
            "started": started.isoformat(timespec="seconds"),
            "version": version.name,
            "engine": info.get("engine"),
            "limits": info.get("limits"),
            "threads": args.threads,
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "rate": {
            "highest_per_s": highest,
            "source": "given (--rate)" if probe is None else "measured",
            "probe": probe,
            "fraction": args.rate_fraction,
            "offered_per_s": rate,
        },
        "mix": {"shares": MIX, "seconds": mix_seconds, "words": WORDS},
        "kinds": tally.summary(),
        "totals": {
            "requests": tally.requests(),
            "errors": tally.errors(),
            "rejected_429": tally.rejected(),
            "client_dropped": tally.client_dropped,
            "messages_stored": len(tally.stored),
        },
        "rss": {
            "start_mb": rss_start,
            "end_mb": rss_end,
            "max_mb": rss_max / 2**20 if rss_max is not None else None,
            "growth_pct": growth,
        },
        "verdict": {"passed": not reasons, "reasons": reasons},
    }


def markdown(result: dict[str, Any]) -> str:
    """The report: one row a kind, then memory and the verdict."""
    meta, rate, rss, totals = result["meta"], result["rate"], result["rss"], result["totals"]
    lines = [
        f"# diplotone soak — {'passed' if result['verdict']['passed'] else '**failed**'}",
        "",
        f"`{meta['command']}` on {meta['started']}, model {meta['version']} ({meta['engine']}), "
        f"{meta['threads']} model threads, {meta['cpus']} CPUs, load average at start "
        f"{', '.join(f'{x:.1f}' for x in meta['load_average_at_start'])}.",
        "",
        f"Highest scoring rate {rate['highest_per_s']:.1f}/s ({rate['source']}); the mix ran "
        f"{result['mix']['seconds']:.0f} s of Poisson arrivals at {rate['fraction']:.0%} of it, "
        f"{rate['offered_per_s']:.1f}/s ({', '.join(f'{k} {v:.0%}' for k, v in result['mix']['shares'].items())}; "
        f"each write followed by a label; {result['mix']['words']}-word messages).",
        "",
        "| kind | requests | ok | 429 | errors | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in result["kinds"].items():
        cells = [row["requests"], row["ok"], row["rejected_429"], row["errors"]]
        cells += [_ms(row["p50_ms"]), _ms(row["p99_ms"]), _ms(row["max_ms"])]
        lines.append(f"| {kind} | " + " | ".join(str(cell) for cell in cells) + " |")
    lines += [
        "",
        f"{totals['requests']} requests, {totals['errors']} errors, {totals['rejected_429']} answered 429, "
        f"{totals['client_dropped']} not sent by the load generator (over {MAX_IN_FLIGHT} in flight), "
        f"{totals['messages_stored']} messages stored.",
        f"RSS at the start of the mix {_mb(rss['start_mb'])} MB, at its end {_mb(rss['end_mb'])} MB "
        f"(max {_mb(rss['max_mb'])} MB): growth {_pct(rss['growth_pct'])} (limit under {RSS_GROWTH_LIMIT_PCT:.0f}%).",
    ]
    if result["verdict"]["reasons"]:
        lines += ["", "Failed: " + "; ".join(result["verdict"]["reasons"]) + "."]
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the mix (default 300)")
    parser.add_argument("--rate-fraction", type=float, default=0.8, help="share of the highest rate (default 0.8)")
    parser.add_argument("--rate", type=float, help="the highest scoring rate, per second, instead of measuring it")
    parser.add_argument("--probe-seconds", type=float, default=20.0, help="how long the rate is measured (default 20)")
    parser.add_argument("--version", type=Path, help="model version folder (default: the newest in model/shipped)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="messages.jsonl whose test split makes the texts")
    parser.add_argument("--engine", help="DIPLOTONE_ENGINE of the service (default: the service's own default)")
    parser.add_argument("--threads", type=int, default=2, help="model threads of the service (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrivals and the mix")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where soak.json and soak.md go")
    args = parser.parse_args(argv)
    for name in ("seconds", "rate_fraction", "probe_seconds"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')}: expected a positive number; found {getattr(args, name)}")
    if args.rate is not None and not args.rate > 0:
        parser.error(f"--rate: expected a positive number of requests a second; found {args.rate}")
    if args.version is not None and not (args.version / "manifest.json").is_file():
        parser.error(f"--version: expected a model version folder with a manifest.json; found {args.version}")
    if not args.corpus.is_file():
        parser.error(f"--corpus: expected a messages.jsonl file; found no file at {args.corpus}")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    result = soak(args, " ".join(["python -m bench.soak", *argv]))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "soak.json", args.out / "soak.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
