"""Servers under test: uvicorn subprocesses on 127.0.0.1 (never another interface), each on its own free port and,
for the service, its own temporary data directory; and a sampler of their resident memory.

Every server gets the same thread budget: ``threads`` model threads (``DIPLOTONE_MODEL_THREADS``, or the naive app's
``BENCH_NAIVE_THREADS``) and OMP/MKL thread counts to match. Where the machine has more CPUs than the budget, the
server is pinned to the first ``threads`` CPUs and the load generator to the rest (``cpu_plan``); on a machine with
exactly that many CPUs, both share them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent  # the source tree: model, service, bench are importable from here
READY_TIMEOUT_S = 600.0  # a first start exports and quantizes the ONNX encoders: minutes on a slow machine


def cpu_plan(threads: int) -> tuple[list[int], list[int]]:
    """(server CPUs, load-generator CPUs): separate when the machine has room for both, shared otherwise."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > threads:
        return cpus[:threads], cpus[threads:]
    return cpus, cpus


@dataclass
class Server:
    """A started server: where it listens, its process, and how long it took to become ready."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float  # time.monotonic() at launch
    ready_s: float = float("nan")
    ready_mb: float = float("nan")  # resident memory once ready: the model loaded, nothing served yet
    on_engine_s: float = float("nan")  # our service: until it serves on its configured engine (prepared meanwhile)
    sampler: RssSampler = field(init=False)

    def __post_init__(self) -> None:
        self.sampler = RssSampler(self.process.pid)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def memory(self) -> dict[str, Any]:
        """Resident memory (MB): at ready, the highest and the last sampled."""
        return {"at_ready_mb": self.ready_mb, **self.sampler.summary()}

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 30 s) and its sampler."""
        self.sampler.stop()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def thread_env(threads: int) -> dict[str, str]:
    """The environment of every process under test: the thread budget, offline."""
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def launch(name: str, app: str, env: dict[str, str], threads: int, logs: Path) -> Server:
    """Start ``uvicorn --factory app`` on a free loopback port and wait until GET /readyz answers 200."""
    port = free_port()
    server_cpus, _ = cpu_plan(threads)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if len(server_cpus) < len(os.sched_getaffinity(0)):
        command = ["taskset", "-c", ",".join(map(str, server_cpus)), *command]
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as sink:
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **thread_env(threads), **env}, stdout=sink, stderr=subprocess.STDOUT
        )
    server = Server(name, process, port, log, started)
    try:
        server.ready_s = _wait_ready(server)
        server.ready_mb = psutil.Process(process.pid).memory_info().rss / 2**20
    except BaseException:
        server.stop()
        raise
    return server


def free_port() -> int:
    """A TCP port free on the loopback interface now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(server: Server) -> float:
    deadline = server.started + READY_TIMEOUT_S
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"server {server.name} exited with code {server.process.returncode} before it was "
                    f"ready; its log ends:\n{server.log_tail()}"
                )
            try:
                if client.get(f"{server.url}/readyz").status_code == 200:
                    return time.monotonic() - server.started
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.05)
    raise TimeoutError(
        f"server {server.name} was not ready within {READY_TIMEOUT_S:.0f} s; its log ends:\n{server.log_tail()}"
    )


class RssSampler:
    """Samples a process's resident set size every ``period_s`` on a background thread, from start to stop."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.period_s = period_s
        self.samples: list[tuple[float, int]] = []  # (time.monotonic(), bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.process.memory_info().rss))
            except psutil.Error:
                return  # the process has ended
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def max_between(self, start: float, end: float) -> int | None:
        """The highest RSS sampled in [start, end] (time.monotonic()), or None if no sample fell there."""
        inside = [rss for moment, rss in self.samples if start <= moment <= end]
        return max(inside) if inside else None

    def summary(self) -> dict[str, Any]:
        values = [rss for _, rss in self.samples]
        return {
            "max_mb": max(values) / 2**20 if values else None,
            "last_mb": values[-1] / 2**20 if values else None,
            "samples": len(values),
        }
