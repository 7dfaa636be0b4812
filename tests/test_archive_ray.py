"""score-archive --ray on a local Ray cluster that the tests start (2 scoring workers, a small object store).

Each run is the real command in its own process (the driver), as a user would start it; the cluster is one
``ray start --head`` for the module. Slow-ish (a minute or two on 2 shared cores) but offline and on the tiny model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diplotone.archive import score_archive, survey_archive
from model.scorer import Scorer
from tests.test_archive import messages

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'diplotone[ray]'")
ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
# A cluster on 127.0.0.1 for one test module: no usage report, and no token (a real cluster keeps Ray's token auth).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, psutil.Process]]:
    """A head node with 3 CPU slots (2 scoring actors, 1 for reading and writing) and a 100 MB object store."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **RAY_ENV}
    command = [
        str(RAY),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=3",
        "--object-store-memory=100000000",
        "--include-dashboard=false",
        f"--temp-dir={tmp_path_factory.mktemp('ray')}",
    ]
    head = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([str(RAY), "status", f"--address={address}"], env=env, capture_output=True).returncode:
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head node did not start"
            time.sleep(2)
        yield address, psutil.Process(head.pid)
    finally:
        head.terminate()
        head.wait(60)


def parquet_archive(folder: Path, records: list[dict[str, Any]], parts: int) -> Path:
    """An archive as a folder of ``parts`` Parquet files, so that Ray reads it in several blocks."""
    folder.mkdir()
    size = -(-len(records) // parts)
    for index in range(parts):
        pq.write_table(
            pa.Table.from_pylist(records[index * size : (index + 1) * size]), folder / f"{index:02d}.parquet"
        )
    return folder


def on_ray(source: Path, target: Path, version: Path, address: str) -> subprocess.Popen[bytes]:
    """The command, its output (Ray's log included) going to ``target``'s name + ``.log``."""
    command = [
        sys.executable,
        "-m",
        "diplotone",
        "score-archive",
        str(source),
        "--output",
        str(target),
        "--model",
        str(version),
        "--ray",
        address,
        "--workers",
        "2",
        "--threads",
        "1",
        "--batch",
        "40",
    ]
    env = {**os.environ, **RAY_ENV}
    with log_of(target).open("w") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def log_of(target: Path) -> Path:
    return target.with_name(target.name + ".log")


def scores(folder: Path) -> dict[str, tuple[float, float, float, str]]:
    rows = pq.read_table(folder).to_pylist()
    assert len(rows) == len({row["id"] for row in rows}), "an id was written twice"
    return {r["id"]: (r["score"], r["interval_low"], r["interval_high"], r["year"]) for r in rows}


def local_scores(scorer: Scorer, source: Path, tmp_path: Path) -> dict[str, tuple[float, float, float, str]]:
    score_archive(scorer, survey_archive(source, tmp_path / "local.parquet"))
    return scores(tmp_path / "local.parquet")


def test_ray_resumes_a_local_output_and_gives_the_local_scores(
    cluster: tuple[str, psutil.Process], tiny_scorer: Scorer, tiny_version: Path, tmp_path: Path
) -> None:
    records = messages(300)
    source = parquet_archive(tmp_path / "in.parquet", records, parts=6)
    expected = local_scores(tiny_scorer, source, tmp_path)
    target = tmp_path / "ray.parquet"
    first = parquet_archive(tmp_path / "first.parquet", records[:70], parts=1)
    score_archive(tiny_scorer, survey_archive(first, target))  # a run that stopped after 70 messages

    run = on_ray(source, target, tiny_version, cluster[0])
    run.wait(timeout=600)
    output = log_of(target).read_text()

    assert run.returncode == 0, output[-3000:]
    assert "300 messages, 70 already in" in output and "wrote 230 results" in output
    _same(scores(target), expected)


def _same(got: dict[str, Any], want: dict[str, Any]) -> bool:
    assert got.keys() == want.keys()
    for key, (score, low, high, year) in want.items():
        assert got[key][:3] == pytest.approx((score, low, high), abs=1e-3), key
        assert got[key][3] == year
    return True


def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_complete(
    cluster: tuple[str, psutil.Process], tiny_scorer: Scorer, tiny_version: Path, tmp_path: Path
) -> None:
    long = [{**r, "text": " ".join([r["text"]] * 6)} for r in messages(3000)]  # ~10 windows each: a longer run
    source = parquet_archive(tmp_path / "in.parquet", long, parts=30)
    expected = local_scores(tiny_scorer, source, tmp_path)
    target = tmp_path / "ray.parquet"

    run = on_ray(source, target, tiny_version, cluster[0])
    try:
        _wait_for_a_first_part(run, target)
        victim = _scoring_worker(cluster[1])
        victim.kill()
        run.wait(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output = log_of(target).read_text()

    assert run.returncode == 0, output[-3000:]
    assert not victim.is_running()
    _same(scores(target), expected)


def _wait_for_a_first_part(run: subprocess.Popen[bytes], target: Path) -> None:
    """Until Ray has written a first scored block and the run is still going (the archive has ~60 blocks)."""
    deadline = time.monotonic() + 300
    while not list(target.glob("*.parquet")):
        assert run.poll() is None, "the run ended before a worker could be killed:\n" + log_of(target).read_text()
        assert time.monotonic() < deadline, "no scored block within 5 minutes"
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before a worker could be killed: make the archive longer"


def _scoring_worker(head: psutil.Process) -> psutil.Process:
    """One of this cluster's scoring actors (its process title names the map worker)."""
    workers = [p for p in head.children(recursive=True) if "MapWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in head.children(recursive=True)]
    return workers[0]
