"""The engines that encode windows at serving time, behind one protocol: torch fp32 (the reference), ONNX Runtime
fp32 and ONNX Runtime int8 (files built by ``model.engines.export``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from model.network import EffusivenessNet

ENGINES = ("torch", "onnx-fp32", "onnx-int8")  # the one list of engine names, best reference first
IDENTITY = (1.0, 0.0)  # (slope, intercept) of a logit correction that changes nothing
STAMP = "onnx.json"  # the export's record beside the ONNX files: recipe, sources, the int8 logit correction
# The residual add and layer norm fused into one SkipLayerNormalization kernel ran slower on this CPU than the two
# standard ops (MiniLM, 2 threads, 200-word messages: int8 55 → 62-68 messages/s, fp32 29 → 32), so neither the
# export nor the session fuses them.
SLOW_FUSIONS = ["SkipLayerNormFusion"]


class Engine(Protocol):
    name: str
    # The head's logit z becomes slope * z + intercept before the sigmoid: int8's fitted correction, else IDENTITY.
    logit_fit: tuple[float, float]

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(windows, tokens) ids and mask → (windows, tokens, hidden) float states."""
        ...


class TorchEngine:
    name = "torch"
    logit_fit = IDENTITY

    def __init__(self, net: EffusivenessNet) -> None:
        self.net = net.eval()

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net.token_states(input_ids, attention_mask)


class OnnxEngine:
    def __init__(self, path: Path, name: str, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS
        )
        self.name = name
        self.logit_fit = _stored_logit_fit(path) if name == "onnx-int8" else IDENTITY

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return torch.from_numpy(np.asarray(self.session.run(None, feeds)[0]))


def _stored_logit_fit(path: Path) -> tuple[float, float]:
    """The int8 logit correction recorded beside ``path`` at export (IDENTITY when none was)."""
    try:
        fit = json.loads((path.parent / STAMP).read_text()).get("int8_logit_fit")
        return (float(fit[0]), float(fit[1])) if fit else IDENTITY
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return IDENTITY
