"""The compute side: the fp32 matrix-multiply limit of this machine, the encoder's FLOP per token, and model-only
throughput per engine (``Predictor.predict`` in batches, no HTTP)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.encoding import encode_messages
from model.predictor import Predictor


def matmul_gflops(threads: int, size: int = 2048, runs: int = 8) -> dict[str, Any]:
    """fp32 GFLOP/s of ``torch.matmul`` on two random (size, size) matrices with ``threads`` threads, best of ``runs``.

    A square matmul is the most efficient thing the CPU's BLAS does, so it stands for the machine's fp32 limit.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.matmul(a, b)  # warm-up: thread pool and caches
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            torch.matmul(a, b)
            seconds.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    flop = 2.0 * size**3
    return {
        "size": size,
        "threads": threads,
        "runs": runs,
        "gflops": flop / min(seconds) / 1e9,
        "median_gflops": flop / statistics.median(seconds) / 1e9,
    }


def int8_matmul_gops(threads: int, size: int = 2048, runs: int = 8) -> dict[str, Any]:
    """int8 GOP/s of ONNX Runtime's ``MatMulInteger`` (uint8 × int8 → int32, the kernel under the int8 engine's
    products) on (size, size) matrices with ``threads`` threads, best of ``runs``: the machine's int8 limit."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8-matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"a": rng.integers(0, 256, (size, size), dtype=np.uint8)}
    session.run(None, feeds)  # warm-up
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - started)
    return {"size": size, "threads": threads, "runs": runs, "gops": 2.0 * size**3 / min(seconds) / 1e9}


def flop_per_token(config: Any, mean_window: float) -> float:
    """Encoder FLOP per token: per layer 2·(4h² + 2h·i) for the projections (Q, K, V, output; the two feed-forward
    matrices) plus 4·s·h for attention scores and the weighted sum of values over a window of s tokens.

    Embeddings, layer norms, softmax and the head are left out (under 1% for MiniLM).
    """
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return float(layers * (2 * (4 * h * h + 2 * h * i) + 4 * mean_window * h))


@dataclass(frozen=True)
class Workload:
    """Messages of one length and what the encoder sees of them."""

    words: int
    messages: list[str]
    tokens_per_message: float  # real tokens given to the encoder ([CLS] and [SEP] of each window included)
    mean_window: float  # token-weighted mean window length, the s of the attention term

    @classmethod
    def of(cls, predictor: Predictor, words: int, messages: list[str]) -> Workload:
        encoded = encode_messages(predictor.tokenizer, messages, predictor.max_tokens)
        lengths = [len(window.token_ids) + 2 for message in encoded for window in message.windows]
        total = sum(lengths)
        return cls(words, messages, total / len(messages), sum(n * n for n in lengths) / total)


def throughput(predictor: Predictor, workload: Workload, seconds: float, group_tokens: int = 16_384) -> dict[str, Any]:
    """Score ``workload`` in groups of about ``group_tokens`` tokens for at least ``seconds`` (one group at least)."""
    per_call = max(1, round(group_tokens / workload.tokens_per_message))
    groups = [workload.messages[i : i + per_call] for i in range(0, len(workload.messages), per_call)]
    predictor.predict(groups[0][:2])  # warm-up: first calls allocate and (ONNX) plan
    calls = scored = 0
    started = time.perf_counter()
    deadline = started + seconds
    while calls == 0 or time.perf_counter() < deadline:
        group = groups[calls % len(groups)]
        predictor.predict(group)
        calls, scored = calls + 1, scored + len(group)
    elapsed = time.perf_counter() - started
    return {
        "messages": scored,
        "seconds": elapsed,
        "messages_per_s": scored / elapsed,
        "tokens_per_s": scored * workload.tokens_per_message / elapsed,
    }


def single_latency(predictor: Predictor, workload: Workload, repeats: int, seconds: float) -> dict[str, float]:
    """p50 and worst of scoring one message alone: ``repeats`` times, or fewer (5 at least) once ``seconds`` pass."""
    predictor.predict(workload.messages[:1])
    timings: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(timings) < repeats and (len(timings) < 5 or time.perf_counter() < deadline):
        started = time.perf_counter()
        predictor.predict([workload.messages[len(timings) % len(workload.messages)]])
        timings.append(time.perf_counter() - started)
    return {"p50_ms": 1000 * statistics.median(timings), "max_ms": 1000 * max(timings), "n": len(timings)}


def measure_engine(
    predictor: Predictor, workloads: list[Workload], limit_gflops: float, seconds: float, repeats: int
) -> dict[str, Any]:
    """Throughput, efficiency and single-message latency of one loaded engine on each workload."""
    config = predictor.net.encoder.config
    rows: dict[str, Any] = {}
    for workload in workloads:
        flop = flop_per_token(config, workload.mean_window)
        speed = throughput(predictor, workload, seconds)
        rows[str(workload.words)] = {
            **speed,
            "tokens_per_message": workload.tokens_per_message,
            "mean_window_tokens": workload.mean_window,
            "flop_per_token": flop,
            "gflops": speed["tokens_per_s"] * flop / 1e9,
            "efficiency": speed["tokens_per_s"] * flop / (limit_gflops * 1e9),
            "single": single_latency(predictor, workload, repeats, seconds),
        }
    return rows
