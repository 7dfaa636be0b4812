"""The effusiveness network: a BERT-style encoder, mean pooling over content tokens, a linear head.

``score = 100 * sigmoid(head(mean of the message's token states))``. Saving and loading live here, once, for the
trainer and the scorer alike.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from model.base import BaseRef

CONFIG = "config.json"
BASE = "base.json"
HEAD = "head.safetensors"
ADAPTER = "adapter"
ENCODER = "encoder"


@dataclass(frozen=True)
class NetworkConfig:
    mode: str = "lora"  # "lora": base + adapter, "full": a whole fine-tuned encoder
    max_tokens: int = 512  # window length, [CLS] and [SEP] included
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.mode not in ("lora", "full"):
            raise ValueError(f"mode must be 'lora' or 'full'; found {self.mode!r}")
        if not 8 <= self.max_tokens <= 512:
            raise ValueError(f"max_tokens must lie in [8, 512]; found {self.max_tokens}")


class EffusivenessNet(nn.Module):
    def __init__(self, encoder: nn.Module, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, 1)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(windows, tokens) ids → (windows, tokens, hidden) contextual states."""
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        states: torch.Tensor = output.last_hidden_state
        return states

    @staticmethod
    def pool(
        states: torch.Tensor, pool_mask: torch.Tensor, window_message: torch.Tensor, n_messages: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum the content-token states of each message across its windows.

        Returns sums (messages, hidden) and token counts (messages,); their ratio is the mean-pooled embedding.
        """
        window_sums = (states * pool_mask.unsqueeze(-1)).sum(dim=1)  # (windows, hidden)
        window_counts = pool_mask.sum(dim=1)  # (windows,)
        sums = states.new_zeros(n_messages, states.shape[-1]).index_add(0, window_message, window_sums)
        counts = states.new_zeros(n_messages).index_add(0, window_message, window_counts)
        return sums, counts

    def head_score(self, pooled: torch.Tensor) -> torch.Tensor:
        """(n, hidden) mean-pooled embeddings → (n,) scores in [0, 1]."""
        return torch.sigmoid(self.head(self.dropout(pooled)).squeeze(-1))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor,
        window_message: torch.Tensor,
        n_messages: int,
    ) -> torch.Tensor:
        """Windows → one score in [0, 1] per message, shape (n_messages,)."""
        states = self.token_states(input_ids, attention_mask)
        sums, counts = self.pool(states, pool_mask, window_message, n_messages)
        return self.head_score(sums / counts.clamp(min=1.0).unsqueeze(-1))


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Loading prints a progress bar, a "load report" of the base's unused pooler and a peft deprecation warning on
    every load; none of it is news to a user, so it goes to transformers' debug logging instead."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        transformers_logging.enable_progress_bar()


def build_network(base_folder: Path, config: NetworkConfig) -> tuple[EffusivenessNet, PreTrainedTokenizerBase]:
    """A fresh network on the base encoder (head initialised at random), with the base's tokenizer."""
    with _quiet_loading():
        encoder = AutoModel.from_pretrained(str(base_folder), add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    return EffusivenessNet(encoder, encoder.config.hidden_size, config.dropout), tokenizer


def save_network(
    net: EffusivenessNet, tokenizer: PreTrainedTokenizerBase, folder: Path, config: NetworkConfig, base: BaseRef
) -> None:
    """Write the weights that differ from the base: the LoRA adapter (or the whole encoder) and the head."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")
    (folder / BASE).write_text(json.dumps(base.to_dict(), indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in net.head.state_dict().items()}, str(folder / HEAD))
    encoder: Any = net.encoder
    if config.mode == "lora":
        encoder.save_pretrained(str(folder / ADAPTER))
    else:
        encoder.save_pretrained(str(folder / ENCODER))
        tokenizer.save_pretrained(str(folder / ENCODER))


def load_network(folder: Path) -> tuple[EffusivenessNet, PreTrainedTokenizerBase, NetworkConfig]:
    """Load a saved network for inference: LoRA weights merged into the encoder, dropout off."""
    config = NetworkConfig(**json.loads((folder / CONFIG).read_text()))
    with _quiet_loading():
        encoder, tokenizer = _load_encoder(folder, config)
    net = EffusivenessNet(encoder, encoder.config.hidden_size, config.dropout)
    net.head.load_state_dict(load_file(str(folder / HEAD)))
    return net.eval(), tokenizer, config


def _load_encoder(folder: Path, config: NetworkConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if config.mode == "full":
        encoder_folder = folder / ENCODER
        encoder: PreTrainedModel = AutoModel.from_pretrained(str(encoder_folder), add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_folder))
    else:
        from peft import PeftModel

        base_folder = BaseRef(**json.loads((folder / BASE).read_text())).resolve()
        base_encoder = AutoModel.from_pretrained(str(base_folder), add_pooling_layer=False)
        encoder = PeftModel.from_pretrained(base_encoder, str(folder / ADAPTER)).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    return encoder, tokenizer


def load_network_for_training(folder: Path) -> tuple[EffusivenessNet, PreTrainedTokenizerBase, NetworkConfig]:
    """Load a saved LoRA version to train it further (a warm start): the adapter stays separate and trainable."""
    from peft import PeftModel

    config = NetworkConfig(**json.loads((folder / CONFIG).read_text()))
    if config.mode != "lora":
        raise ValueError(f"a warm start needs a LoRA version; found mode {config.mode!r} in {folder}")
    base_folder = BaseRef(**json.loads((folder / BASE).read_text())).resolve()
    with _quiet_loading():
        base_encoder = AutoModel.from_pretrained(str(base_folder), add_pooling_layer=False)
        encoder = PeftModel.from_pretrained(base_encoder, str(folder / ADAPTER), is_trainable=True)
        tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    net = EffusivenessNet(encoder, base_encoder.config.hidden_size, config.dropout)
    net.head.load_state_dict(load_file(str(folder / HEAD)))
    return net, tokenizer, config
