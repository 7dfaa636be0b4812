"""One settings class for the service, read from ``DIPLOTONE_*`` environment variables."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.engines import ENGINES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIPLOTONE_", env_file=None, extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("var")  # SQLite file, model registry and training snapshots live here
    database_url: SecretStr | None = None  # e.g. postgresql+psycopg://...; default: SQLite under data_dir

    # Scoring limits
    max_texts: int = Field(64, ge=1, description="texts per /v1/score request")
    max_chars: int = Field(20_000, ge=1, description="characters per text")
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="bytes per request body, refused with 413 before it is parsed; the default holds a bulk write "
        "of 1,000 messages of about 8,000 characters",
    )
    # Batching and back-pressure
    batch_tokens: int = Field(
        2048, ge=64, description="tokens per model batch, counted with the model's tokenizer before queueing"
    )
    queue_size: int = Field(256, ge=1, description="texts waiting for the model before 429, whatever the wait")
    max_queue_wait_s: float = Field(
        2.0,
        description="a scoring request that would wait longer than this for its result (estimated from the work "
        "queued ahead of it and the model's measured speed) is refused with 429 and a Retry-After from the estimate",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="deadline of a scoring request before 503")
    max_batch_requests: int | None = Field(
        None, ge=1, description="requests per model call; 1 turns batching off; default: as many as batch_tokens allows"
    )
    model_threads: int = Field(2, ge=1, description="torch (or ONNX Runtime) threads of the model worker")
    engine: str = Field(
        "onnx-int8",
        description=f"encoder engine, one of {', '.join(ENGINES)}; an ONNX engine must agree with torch on the test "
        "split or is refused, and the service falls back to onnx-fp32, then torch",
    )
    # Access
    score_requires_key: bool = False
    open_reads: bool = Field(
        False,
        description="let stored messages, their labels and timelines be read without a key (like scoring); by "
        "default reading needs a key of scope read, label or admin",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins whose browser pages may call the API (JSON list, e.g. "
        "'[\"https://analysts.example\"]'); empty: no CORS headers, so browsers refuse cross-origin calls",
    )
    # Retraining
    training_threads: int = Field(1, ge=1, description="torch threads of a retraining process")
    base_model: str | None = None  # a local Hugging Face model folder; default: the packaged MiniLM
    corpus_dir: Path | None = None  # the bundled messages.jsonl + pairs.jsonl; default: training/data of the package
    training_epochs: int | None = Field(default=None, ge=1, description="override the recipe's epochs")
    training_max_steps: int | None = Field(default=None, ge=1, description="cap the training steps (smoke runs)")
    training_warm_start: bool = Field(
        True,
        description="continue from the active version on the labels plus a replayed corpus sample (minutes), "
        "instead of the full recipe from the base model (about twenty minutes on 2 cores)",
    )
    training_replay: int = Field(400, ge=0, description="corpus groups replayed beside the labels in a warm start")
    training_user_weight: int = Field(
        3,
        ge=1,
        description="times each labelled message counts in a run (3: chosen on bench.learning_curve, where 1 learned "
        "little from 100 labels beside 400 replayed corpus groups)",
    )
    # Replicas (several processes on one PostgreSQL database and one registry folder)
    registry_poll_s: float = Field(
        2.0,
        ge=0,
        description="seconds between looks at the registry's active pointer; a version activated by another replica "
        "is served within about this long; 0 turns the watch off",
    )
    training_lease_s: float = Field(
        60.0,
        gt=0,
        description="a running training run whose replica has not renewed its lease for this long is failed by the "
        "next replica that starts a run (or starts up), so a replica that died never blocks retraining for good",
    )

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        if engine not in ENGINES:
            raise ValueError(f"expected one of {', '.join(ENGINES)}; found {engine!r}")
        return engine

    @field_validator("max_queue_wait_s")
    @classmethod
    def _positive_wait(cls, seconds: float) -> float:
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"expected a positive, finite number of seconds; found {seconds!r}")
        return seconds

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and not self.score_requires_key and self.database_url is None:
            # An open scorer on a throwaway SQLite file is a development set-up; refuse it where it would surprise.
            raise ValueError(
                "environment=production needs DIPLOTONE_DATABASE_URL (found none) or DIPLOTONE_SCORE_REQUIRES_KEY=true"
            )
        return self

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'diplotone.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
