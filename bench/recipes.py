"""int8 recipes side by side on the same 200-word messages: the int8 engine exactly as the service builds it (the
``FP32_LAYERS`` layers most sensitive to quantization kept fp32), the previous all-int8 recipe (the same export with
no layer kept fp32), onnx-fp32 and torch; messages/s of each, and parity against onnx-fp32 on the test-split texts.

Each recipe is exported into a folder of its own (a copy of the version), so neither touches the other's cache, and
all four run on one loaded Scorer whose encoder engine is swapped between measurements: tokenization, windows,
pooling and the head are the same code for every recipe.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import model.engines.export
from bench.compute import Workload, throughput
from bench.progress import phase, say
from model.engines import OnnxEngine, TorchEngine
from model.engines.export import onnx_files
from model.engines.parity import parity
from model.predictor import Predictor

SHIPPED, ALL_INT8 = "int8-shipped", "int8-all"
RECIPES = (SHIPPED, ALL_INT8, "onnx-fp32", "torch")


@contextmanager
def fp32_layers(count: int) -> Iterator[None]:
    """Export with ``count`` layers kept fp32 instead of ``model.engines.export.FP32_LAYERS`` (restored afterwards)."""
    kept = model.engines.export.FP32_LAYERS
    model.engines.export.FP32_LAYERS = count
    try:
        yield
    finally:
        model.engines.export.FP32_LAYERS = kept


def run_recipes(
    version: Path,
    work: Path,
    workload_words: int,
    messages: list[str],
    texts: list[str],
    calibration: list[str],
    threads: int,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Export both int8 recipes of ``version``, check each engine's parity against fp32 on ``texts``, then measure
    the four in turn, ``rounds`` times over, ``seconds`` each, on ``messages``."""
    torch.set_num_threads(threads)
    scorer = Predictor.from_pretrained(version, threads=threads)
    inputs = scorer.window_batches(calibration)
    # Without the version's cache (the engines section may have exported into it): each recipe exports afresh.
    fresh = shutil.ignore_patterns("cache")
    folders = {
        name: shutil.copytree(version, work / "recipes" / name / version.name, ignore=fresh) for name in RECIPES[:2]
    }
    with phase(f"recipes: export {SHIPPED} (up to {model.engines.export.FP32_LAYERS} most sensitive layers kept fp32)"):
        shipped = onnx_files(folders[SHIPPED], scorer.net, inputs)
    with phase(f"recipes: export {ALL_INT8} (no layer kept fp32)"), fp32_layers(0):
        every = onnx_files(folders[ALL_INT8], scorer.net, inputs)
    engines = {
        SHIPPED: OnnxEngine(shipped["onnx-int8"], "onnx-int8", threads),  # "onnx-int8" reads its logit fit
        ALL_INT8: OnnxEngine(every["onnx-int8"], "onnx-int8", threads),
        "onnx-fp32": OnnxEngine(shipped["onnx-fp32"], "onnx-fp32", threads),
        "torch": TorchEngine(scorer.net),
    }
    with phase(f"recipes: parity against onnx-fp32 on {len(texts)} test-split texts"):
        scores = {name: _predict(scorer, engine, texts) for name, engine in engines.items()}
    workload = Workload.of(scorer, workload_words, messages)
    measured: dict[str, list[float]] = {name: [] for name in engines}
    for index in range(rounds):
        for name, engine in engines.items():
            scorer.engine = engine
            speed = throughput(scorer, workload, seconds)
            measured[name].append(speed["messages_per_s"])
            say(
                f"recipes round {index + 1}/{rounds} · {name} · {workload_words} words: "
                f"{speed['messages_per_s']:.1f} messages/s ({speed['seconds']:.1f} s)"
            )
    return {
        "messages_words": workload_words,
        "tokens_per_message": workload.tokens_per_message,
        "parity_texts": len(texts),
        "recipes": {
            name: {
                "fp32_layers": _fp32_layers(folders[SHIPPED if name == SHIPPED else ALL_INT8])
                if "int8" in name
                else None,
                "parity_vs_fp32": parity(scores["onnx-fp32"], scores[name]),
                "rounds_messages_per_s": measured[name],
            }
            for name in engines
        },
    }


def _predict(scorer: Predictor, engine: Any, texts: list[str]) -> Any:
    scorer.engine = engine
    return scorer.predict(texts)


def _fp32_layers(folder: Path) -> list[int] | None:
    """The encoder layers the export kept fp32, from its stamp."""
    stamp = json.loads((folder / "cache" / "onnx.json").read_text())
    layers = stamp.get("int8_fp32_layers")
    return list(layers) if isinstance(layers, list) else None
