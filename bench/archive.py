"""``python -m bench.archive`` (``make bench-archive``, part of ``make bench``): score-archive's messages/s, locally
and on Ray Data with 1 and 2 workers, side by side in one run, into bench/results/archive.json and archive.md.

Each way is timed end to end twice, on a short archive and on the full one: the difference gives the marginal rate
(messages/s once running) and the short run the fixed cost (starting Ray, loading a model in each actor), so
that an estimate for a larger archive is fixed + messages ÷ rate.

python -m bench.archive                  # 600 messages from the test split, the shipped model, torch engine
python -m bench.archive --messages 200 --short 40 --version DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.texts import CORPUS, corpus_texts

RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 2  # the cores of the dev machine: every way gets all of them
WAYS = {  # name: (ray workers, torch threads each); 0 workers is the local path
    "local": (0, THREADS),
    "ray, 1 worker": (1, THREADS),
    "ray, 2 workers": (2, THREADS // 2),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--messages", type=int, default=600, help="messages in the full archive")
    parser.add_argument("--short", type=int, default=64, help="messages in the short archive (the fixed cost)")
    parser.add_argument("--version", type=Path, help="model version folder (default: the newest in model/shipped)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from bench.__main__ import shipped_version

    version = (args.version or shipped_version()).resolve()
    results = run(version, args.messages, args.short, " ".join(["python -m bench.archive", *argv]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "archive.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "archive.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def run(version: Path, messages: int, short: int, command: str) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]  # above ~0.5 on an idle 2-core box: something else shares the CPUs
    texts = corpus_texts(CORPUS)
    work = Path(tempfile.mkdtemp(prefix="diplotone-bench-archive-"))
    try:
        served = shutil.copytree(version, work / version.name, ignore=shutil.ignore_patterns("cache"))
        archives = {n: _archive(work / f"in-{n}.parquet", texts, n) for n in (short, messages)}
        ways: dict[str, Any] = {}
        for name, (workers, threads) in WAYS.items():
            seconds = {n: _timed(served, path, work / f"out-{len(ways)}-{n}.parquet", workers, threads)
                       for n, path in archives.items()}  # fmt: skip
            gap = seconds[messages] - seconds[short]
            # A full run no slower than the short one: the machine's load changed between them; no rate to give.
            marginal = (messages - short) / gap if gap > 0 else None
            ways[name] = {
                "workers": workers,
                "threads_each": threads,
                "seconds": {str(n): round(s, 2) for n, s in seconds.items()},
                "end_to_end_messages_per_s": round(messages / seconds[messages], 2),
                "marginal_messages_per_s": round(marginal, 2) if marginal else None,
                "fixed_s": round(seconds[short] - short / marginal, 1) if marginal else None,
            }
        return {
            "meta": {
                "command": command,
                "version": version.name,
                "engine": "torch",
                "messages": messages,
                "short": short,
                "cpus": os.cpu_count(),
                "load_average_at_start": load_at_start,
                "load_average_at_end": os.getloadavg()[0],
                "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
            },
            "ways": ways,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _archive(folder: Path, texts: list[str], n: int) -> Path:
    """``n`` messages cycled from ``texts``, as Parquet parts of 100 rows (so Ray reads several blocks)."""
    folder.mkdir()
    rows = [{"id": f"b{i:06d}", "text": texts[i % len(texts)], "sender": "bench"} for i in range(n)]
    for start in range(0, n, 100):
        pq.write_table(pa.Table.from_pylist(rows[start : start + 100]), folder / f"{start:06d}.parquet")
    return folder


def _timed(version: Path, source: Path, target: Path, workers: int, threads: int) -> float:
    """Seconds for the whole job as a user runs it: check the archive, load the model(s), score, write."""
    from diplotone.archive import score_archive, survey_archive

    started = time.monotonic()
    survey = survey_archive(source, target)
    if workers == 0:
        import torch

        from model.scorer import Scorer

        torch.set_num_threads(threads)
        score_archive(Scorer.from_pretrained(version), survey)
    else:
        from diplotone.archive_ray import score_on_ray
        from model.scorer import Scorer

        name = Scorer.from_pretrained(version).version  # as the command does before it starts Ray
        score_on_ray(survey, version, name, "local", workers=workers, threads=threads)
    elapsed = time.monotonic() - started
    assert pq.read_table(target).num_rows == survey.rows, f"{target}: not every message was written"
    return elapsed


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# score-archive: messages/s ({meta['command']})",
        "",
        f"Model {meta['version']} ({meta['engine']} engine), {meta['messages']} messages of the test split "
        f"({meta['mean_words']} words on average), {meta['cpus']} CPUs, "
        f"load average {meta['load_average_at_start']:.2f} at the start, "
        f"{meta.get('load_average_at_end', float('nan')):.2f} at the end. "
        "Marginal = (full − short messages) ÷ (full − short seconds); fixed = the short run's seconds"
        " less its messages at the marginal rate (Ray's start, each actor's model load).",
        "",
        "| way | workers × threads | seconds (short, full) | end to end msg/s | marginal msg/s | fixed s |",
        "|---|---|---|---|---|---|",
    ]
    for name, way in results["ways"].items():
        short, full = way["seconds"].values()
        lines.append(
            f"| {name} | {way['workers'] or 'no Ray'} × {way['threads_each']} | {short}, {full} | "
            f"{way['end_to_end_messages_per_s']} | {way['marginal_messages_per_s']} | {way['fixed_s']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
