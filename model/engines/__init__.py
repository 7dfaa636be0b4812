"""Encoder engines: ``runtime`` (what encodes at serving time), ``export`` (building a version's ONNX encoders) and
``parity`` (whether an ONNX engine may serve, and which one does).

Only the encoder differs between engines; tokenization, windows, pooling and the head stay in ``model.predictor``,
so every engine produces the same result shape.
"""

from model.engines.runtime import ENGINES, IDENTITY, Engine, OnnxEngine, TorchEngine

__all__ = ["ENGINES", "IDENTITY", "Engine", "OnnxEngine", "TorchEngine"]
