"""The naive baseline: one FastAPI endpoint that runs a transformers ``pipeline`` per request.

It is what a first version of the service would look like: ``POST /score {"text": ...}`` calls the pipeline on that
one text in FastAPI's thread pool (a plain ``def`` route, FastAPI's advice for blocking work); no batching, no queue,
no explanations. The pipeline carries the same model faithfully: the merged encoder of the version (loaded by the
production loader), mean pooling over content tokens ([CLS]/[SEP] left out, as the Scorer does), the same head, and
truncation at the model's length (512 for MiniLM) as a plain pipeline does, instead of the Scorer's windows.

Serve: ``BENCH_NAIVE_VERSION=<version folder> uvicorn --factory bench.naive:create_app``; torch threads come from
``BENCH_NAIVE_THREADS`` (default 2), the service's budget.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from transformers import Pipeline

from model.predictor import Predictor


class EffusivenessPipeline(Pipeline):
    """text → {"score": 0-100}: tokenize (truncated), encode, mean-pool content tokens, linear head, sigmoid."""

    def __init__(self, predictor: Predictor, **kwargs: Any) -> None:
        encoder: Any = predictor.net.encoder  # the merged BertModel of the version
        super().__init__(model=encoder, tokenizer=cast(Any, predictor.tokenizer), device=-1, **kwargs)
        self.head = predictor.net.head
        self.max_length = min(512, int(encoder.config.max_position_embeddings))

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return {}, {}, {}

    def preprocess(self, input_: Any, **kwargs: Any) -> dict[str, Any]:
        tokenizer: Any = self.tokenizer
        return dict(
            tokenizer(
                input_,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
        )

    def _forward(self, input_tensors: dict[str, Any], **kwargs: Any) -> Any:
        # Runs under the pipeline's no-grad context, so the pooling and the head live here too.
        ids, mask = input_tensors["input_ids"], input_tensors["attention_mask"]
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (1, tokens, hidden)
        content = (mask * (1 - input_tensors["special_tokens_mask"])).unsqueeze(-1).to(states.dtype)
        pooled = (states * content).sum(dim=1) / content.sum(dim=1).clamp(min=1.0)  # (1, hidden)
        return torch.sigmoid(self.head(pooled)).squeeze() * 100.0

    def postprocess(self, model_outputs: Any, **kwargs: Any) -> dict[str, float]:
        return {"score": round(float(model_outputs), 4)}


class NaiveScoreRequest(BaseModel):
    text: str = Field(min_length=1)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    torch.set_num_threads(int(os.environ.get("BENCH_NAIVE_THREADS", "2")))
    predictor = Predictor.from_pretrained(os.environ["BENCH_NAIVE_VERSION"])
    app.state.pipeline = EffusivenessPipeline(predictor)
    yield


def create_app() -> FastAPI:
    """The naive app; its model loads in the lifespan, so the server answers only once it can score."""
    app = FastAPI(title="diplotone naive baseline", lifespan=lifespan)

    @app.post("/score")
    def score(body: NaiveScoreRequest, request: Request) -> dict[str, float]:
        result: dict[str, float] = request.app.state.pipeline(body.text)
        return result

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app
