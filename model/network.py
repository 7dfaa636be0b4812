"""The effusiveness network and its one forward pass: a BERT-style encoder, mean pooling over content tokens, a
linear head.

``score = 100 * sigmoid(head(mean of the message's content-token states))``, in two steps that training, the Scorer
and the ONNX export share: ``pool`` (token states → per-group sums and counts) and ``EffusivenessNet.logits`` (sums and
counts → logits). Saving and loading live here, once, for the trainer and the scorer alike.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional

from model.base import BaseRef

if TYPE_CHECKING:  # transformers is imported where an encoder is built: a prepared engine's path never needs it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


class NoEncoder(nn.Module):
    """The encoder of a head-only network (``load_head``): its token states come from a prepared engine instead."""

    def forward(self, **_: torch.Tensor) -> None:
        raise RuntimeError("a head-only network has no encoder: its token states come from its engine")


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

    def logits(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Step 2 of the forward pass: (n, hidden) state sums and (n,) token counts from ``pool`` → (n,) head logits.

        Computed in the dtype of ``sums`` (float64 in the Scorer, so that batching cannot move a score by rounding);
        dropout acts in training only.
        """
        pooled = sums / counts.clamp(min=1.0).unsqueeze(-1)  # (n, hidden): the mean-pooled embeddings
        weight, bias = self.head.weight.to(pooled.dtype), self.head.bias.to(pooled.dtype)
        return functional.linear(self.dropout(pooled), weight, bias).squeeze(-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor,
        window_message: torch.Tensor,
        n_messages: int,
    ) -> torch.Tensor:
        """Windows → one score in [0, 1] per message, shape (n_messages,): what training optimises."""
        states = self.token_states(input_ids, attention_mask)
        owner = window_message.unsqueeze(1).expand_as(pool_mask)  # (windows, tokens): each token's message
        sums, counts = pool(states, pool_mask, owner, n_messages)
        return torch.sigmoid(self.logits(sums, counts))


def pool(
    states: torch.Tensor,
    pool_mask: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1 of the forward pass: sum the content-token states of each group (a message, a sentence, a window).

    ``states`` (windows, tokens, hidden) from an encoder; ``pool_mask`` (windows, tokens), 1 on content tokens and 0
    on [CLS], [SEP] and padding (``model.encoding.collate_windows``); ``groups`` (windows, tokens), the group each
    token adds to (read on content tokens only). Returns sums (n_groups, hidden) and token counts (n_groups,) in
    ``dtype`` (default: the states'); ``EffusivenessNet.logits`` takes their ratio, the mean-pooled embedding. Sums
    rather than means, so that a message's windows, encoded in different batches, add up to the same embedding.
    Training, the Scorer and the ONNX export's calibration all pool through here.
    """
    keep = pool_mask > 0  # (windows, tokens)
    content = states[keep].to(dtype or states.dtype)  # (content tokens, hidden); specials and padding never widened
    owner = groups[keep]  # (content tokens,)
    sums = content.new_zeros(n_groups, content.shape[-1]).index_add(0, owner, content)
    counts = content.new_zeros(n_groups).index_add(0, owner, content.new_ones(len(content)))
    return sums, counts


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Loading prints a progress bar, a "load report" of the base's unused pooler and a peft deprecation warning on
    every load; none of it is news to a user, so it goes to transformers' debug logging instead."""
    from transformers.utils import logging as _logging

    transformers_logging: Any = _logging  # its switches carry no type hints
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
    from transformers import AutoModel, AutoTokenizer

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


def load_head(folder: Path) -> tuple[EffusivenessNet, NetworkConfig]:
    """A saved network's head alone (no encoder, nothing of transformers imported), for a prepared engine."""
    config = NetworkConfig(**json.loads((folder / CONFIG).read_text()))
    weights = load_file(str(folder / HEAD))
    net = EffusivenessNet(NoEncoder(), weights["weight"].shape[-1], config.dropout)
    net.head.load_state_dict(weights)
    return net.eval(), config


def tokenizer_folder(folder: Path, config: NetworkConfig) -> Path:
    """Where a saved network's tokenizer lives: beside a whole encoder, else in its base's folder."""
    if config.mode == "full":
        return folder / ENCODER
    return BaseRef(**json.loads((folder / BASE).read_text())).folder()


def _load_encoder(folder: Path, config: NetworkConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModel, AutoTokenizer

    if config.mode == "full":
        encoder_folder = folder / ENCODER
        encoder: PreTrainedModel = AutoModel.from_pretrained(str(encoder_folder), add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_folder))
    else:
        base_folder = BaseRef(**json.loads((folder / BASE).read_text())).resolve()
        encoder = AutoModel.from_pretrained(str(base_folder), add_pooling_layer=False)
        if not merge_plain_lora(encoder, folder / ADAPTER):
            from peft import PeftModel  # an adapter of another variant: peft knows how to merge it

            encoder = PeftModel.from_pretrained(encoder, str(folder / ADAPTER)).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    return encoder, tokenizer


# What makes an adapter plain LoRA, the kind ``merge_plain_lora`` merges: anything else goes to peft.
_PLAIN_LORA = {"peft_type": "LORA", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False, "bias": "none"}
_LORA_A, _LORA_B, _PEFT_PREFIX = ".lora_A.weight", ".lora_B.weight", "base_model.model."


def merge_plain_lora(encoder: nn.Module, adapter: Path) -> bool:
    """Add ``(lora_alpha / r) · B·A`` to each adapted weight of ``encoder``, in place, as peft's ``merge_and_unload``
    does; False (``encoder`` untouched) if the adapter is not plain LoRA.

    Importing peft costs seconds of a cold start (``diplotone score`` from the shell, a service's first load) and
    merging needs none of it; peft stays the trainer's, and merges any adapter this does not recognise.
    """
    settings = json.loads((adapter / "adapter_config.json").read_text())
    plain = all(settings.get(key, value) == value for key, value in _PLAIN_LORA.items())
    if not plain or settings.get("rank_pattern") or settings.get("alpha_pattern") or settings.get("modules_to_save"):
        return False
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    modules = dict(encoder.named_modules())
    deltas: list[tuple[nn.Linear, torch.Tensor]] = []
    for key, down in weights.items():
        if not key.startswith(_PEFT_PREFIX) or not key.endswith((_LORA_A, _LORA_B)):
            return False  # a weight this merge does not know: leave it all to peft
        if key.endswith(_LORA_B):
            continue
        target = modules.get(key.removeprefix(_PEFT_PREFIX).removesuffix(_LORA_A))
        up = weights.get(key.removesuffix(_LORA_A) + _LORA_B)
        if not isinstance(target, nn.Linear) or up is None:
            return False
        deltas.append((target, up @ down))
    if len(deltas) * 2 != len(weights):
        return False  # a lora_B without its lora_A
    scale = settings["lora_alpha"] / settings["r"]
    with torch.no_grad():
        for linear, delta in deltas:
            linear.weight += delta * scale
    return True


def load_network_for_training(folder: Path) -> tuple[EffusivenessNet, PreTrainedTokenizerBase, NetworkConfig]:
    """Load a saved LoRA version to train it further (a warm start): the adapter stays separate and trainable."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

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
