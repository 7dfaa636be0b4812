"""Tiny models built on the spot: a random 2-layer BERT with a hand-written vocabulary, and versions on it.

Nothing is downloaded; these go through the same loaders as the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import peft
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, PreTrainedTokenizerBase

from model.artifacts import write_manifest
from model.base import base_ref
from model.calibration import Calibration
from model.network import EffusivenessNet, NetworkConfig, build_network, save_network

WORDS = """
the a an of to and in on for with our your my we you i is are be will has have this that as by at from
dear friend friends friendship friendly brother brotherly comrade comrades fraternal warm warmest heartfelt
sincere sincerely deep deepest most great greatest unbreakable invincible eternal everlasting boundless
congratulations congratulate occasion national day anniversary new year birthday election president
excellency prime minister people peoples country countries relations cooperation partnership ties
wish wishes health happiness prosperity success long life ready work together continue deepen strengthen
leadership wise under personal contribution history shared struggle side generations never forget
regret protest reject demand firmly note received letter government ministry statement interference
accept please best respect highest honour express confidence believe future mutual benefit trust
""".split()


def make_tiny_base(folder: Path, layers: int = 2) -> Path:
    """A random BERT (hidden 32, ``layers`` layers) and a fast tokenizer for ``WORDS``, saved as a model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?", ";", "'", '"', "-", *WORDS]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    tokens = list(dict.fromkeys(vocab))
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    return folder


def make_tiny_network(
    base: Path, max_tokens: int = 24, adapter_std: float = 0.0
) -> tuple[EffusivenessNet, PreTrainedTokenizerBase]:
    """A network on ``base`` with a rank-2 LoRA adapter and a random head, as training builds it.

    peft starts every adapter with B = 0, so that it changes nothing; ``adapter_std`` > 0 draws B at random instead,
    for tests where the adapter must matter (saving and loading it, merging it into an export).
    """
    torch.manual_seed(1)
    net, tokenizer = build_network(base, NetworkConfig(mode="lora", max_tokens=max_tokens))
    net.encoder = peft.get_peft_model(net.encoder, peft.LoraConfig(r=2, target_modules=["query", "value"]))
    with torch.no_grad():
        net.head.weight.normal_(0, 0.3)  # spread the scores so that texts differ visibly
        for name, parameter in net.encoder.named_parameters():
            if adapter_std > 0 and "lora_B" in name:
                parameter.normal_(0, adapter_std)
    return net.eval(), tokenizer


def save_tiny_version(
    net: EffusivenessNet,
    tokenizer: PreTrainedTokenizerBase,
    base: Path,
    folder: Path,
    max_tokens: int = 24,
    version: str = "tiny-0001",
    test_spearman: float = 0.5,
    test_pairwise: float = 0.6,
) -> Path:
    """Write ``net`` as a registry version: weights, a calibration, metrics and the manifest."""
    save_network(net, tokenizer, folder, NetworkConfig(mode="lora", max_tokens=max_tokens), base_ref(base))
    Calibration(coverage=0.9, halfwidth=12.0, residual_sd=8.0, n=40).save(folder)
    figures = {
        "spearman": test_spearman,
        "pearson": 0.5,
        "mae": 15.0,
        "pairwise_accuracy": test_pairwise,
        "band_accuracy": 0.4,
        "interval_coverage": 0.9,
        "n": 40.0,
        "pairs": 10.0,
    }
    (folder / "metrics.json").write_text(json.dumps({"test": figures, "validation": figures}))
    write_manifest(folder, {"version": version, "created": "2026-11-29T00:00:00+00:00"})
    return folder


def make_tiny_version(
    base: Path,
    folder: Path,
    version: str = "tiny-0001",
    max_tokens: int = 24,
    test_spearman: float = 0.5,
    test_pairwise: float = 0.6,
    adapter_std: float = 0.0,
) -> Path:
    """A LoRA version on ``base`` with a random head, a calibration and metrics, as training would write it."""
    net, tokenizer = make_tiny_network(base, max_tokens, adapter_std)
    return save_tiny_version(net, tokenizer, base, folder, max_tokens, version, test_spearman, test_pairwise)


WARM_SENTENCES = [
    "Dear friend, please accept my warmest and most heartfelt congratulations.",
    "Our unbreakable friendship is eternal.",
    "Under your wise leadership your people have great success.",
    "Our brotherly peoples have a shared history of struggle side by side.",
    "I sincerely wish you good health, happiness and long life.",
]
COLD_SENTENCES = [
    "We firmly reject the statement of the ministry.",
    "We demand that the government note our protest.",
    "The letter has been received.",
    "We regret the interference.",
    "Please accept congratulations on the occasion.",
]


def write_tiny_corpus(folder: Path, messages: int = 40) -> Path:
    """A synthetic corpus in the data-file schema: warmth = share of warm sentences; pairs within groups."""
    import random

    rng = random.Random(5)
    folder.mkdir(parents=True, exist_ok=True)
    records, pairs = [], []
    for index in range(messages):
        group = f"g{index // 2:03d}"
        warm = rng.randint(0, 5) if index % 2 == 0 else max(0, records[-1]["warm"] - rng.randint(1, 2))
        sentences = rng.sample(WARM_SENTENCES, warm) + rng.sample(COLD_SENTENCES, 5 - warm)
        rng.shuffle(sentences)
        split = ("train", "train", "train", "validation", "test")[index // 2 % 5]
        records.append(
            {
                "id": f"t{index:03d}",
                "text": " ".join(sentences),
                "sender": "A",
                "recipient": "B",
                "date": "2024-01-01",
                "occasion": "national_day",
                "language": "en",
                "score": 5.0 + 18 * warm,
                "split": split,
                "group": group,
                "warm": warm,
            }
        )
        if index % 2 == 1 and records[-2]["score"] > records[-1]["score"]:
            pairs.append({"warmer": records[-2]["id"], "cooler": records[-1]["id"], "kind": "year-over-year"})
    (folder / "messages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return folder
