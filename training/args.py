"""Training arguments: one dataclass that validates itself and is saved next to the weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Full fine-tuning moves every weight of a pretrained encoder: it wants a rate about 30 times smaller than an adapter,
# which starts from zero.
FULL_LEARNING_RATE = 3e-5


@dataclass
class TrainArgs:
    base: str | None = None  # None: the packaged MiniLM; else a local Hugging Face model folder
    mode: str = "lora"  # "lora" (adapter + head, small enough to commit) or "full"
    max_tokens: int = 512  # window length; longer messages span several windows
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    # Adapt only the top layers: no gradient then flows through the bottom ones, which halves a step on 2 cores.
    lora_top_layers: int = 4
    learning_rate: float = 1e-3  # for the LoRA adapter; full fine-tuning: FULL_LEARNING_RATE
    head_learning_rate: float = 3e-3
    weight_decay: float = 0.01
    epochs: int = 5
    batch_groups: int = 4  # groups (a message with its variants) per step; pair members share a batch
    warmup_fraction: float = 0.06
    pair_margin: float = 0.05  # on the 0-1 target: the warmer message should lead by 5 points
    pair_weight: float = 1.0
    # Pairs made by deleting a message's warmest sentence (training/deletions.py): the direction is known, the size
    # is not, so their margin is small.
    deletion_pairs: bool = False
    deletion_margin: float = 0.01
    # Messages labelled in the service (snapshot ids "stored-…") count this many times in training: their groups are
    # repeated in each epoch's sample.
    user_weight: int = 1
    # Continue from a LoRA version (a folder; the service passes the active one) instead of the base model, on the
    # labelled messages plus ``replay`` train-split groups of the corpus drawn at random, so the model learns the new
    # labels without forgetting the corpus; a run then takes minutes instead of the full recipe's twenty.
    warm_start: str | None = None
    replay: int = 400
    patience: int = 2  # epochs without a better validation Spearman before stopping
    seed: int = 13
    threads: int = 2
    coverage: float = 0.9
    max_steps: int = -1  # > 0 caps the run (tests, smoke runs)

    def __post_init__(self) -> None:
        checks = [
            (self.mode in ("lora", "full"), "mode must be 'lora' or 'full'", self.mode),
            (8 <= self.max_tokens <= 512, "max_tokens must lie in [8, 512]", self.max_tokens),
            (self.lora_r >= 1, "lora_r must be >= 1", self.lora_r),
            (self.lora_top_layers >= 1, "lora_top_layers must be >= 1", self.lora_top_layers),
            (0 < self.learning_rate < 1, "learning_rate must lie in (0, 1)", self.learning_rate),
            (0 < self.head_learning_rate < 1, "head_learning_rate must lie in (0, 1)", self.head_learning_rate),
            (self.epochs >= 1, "epochs must be >= 1", self.epochs),
            (self.batch_groups >= 1, "batch_groups must be >= 1", self.batch_groups),
            (0 <= self.warmup_fraction < 1, "warmup_fraction must lie in [0, 1)", self.warmup_fraction),
            (0 <= self.pair_margin < 1, "pair_margin must lie in [0, 1)", self.pair_margin),
            (self.pair_weight >= 0, "pair_weight must be >= 0", self.pair_weight),
            (0 <= self.deletion_margin < 1, "deletion_margin must lie in [0, 1)", self.deletion_margin),
            (self.patience >= 1, "patience must be >= 1", self.patience),
            (self.user_weight >= 1, "user_weight must be >= 1", self.user_weight),
            (self.replay >= 0, "replay must be >= 0", self.replay),
            (self.warm_start is None or self.mode == "lora", "warm_start needs mode 'lora'", self.mode),
            (self.threads >= 1, "threads must be >= 1", self.threads),
            (0.5 <= self.coverage < 1, "coverage must lie in [0.5, 1)", self.coverage),
        ]
        for ok, rule, found in checks:
            if not ok:
                raise ValueError(f"{rule}; found {found!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
