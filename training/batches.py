"""Training batches: groups of messages (a message and its variants) cut into windows, with their pairs.

Pair members share a group, and a batch holds whole groups, so every pairwise judgement of a batch can be scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from model.encoding import EncodedMessage, Window, collate_windows, encode_messages


@dataclass(frozen=True)
class Group:
    ids: list[str]
    messages: list[EncodedMessage]
    targets: list[float]  # score / 100; NaN for a message that only a pair speaks for (training/deletions.py)
    pairs: list[tuple[int, int]]  # (warmer, cooler) positions inside the group
    margins: list[float]  # each pair's margin on the 0-1 scale; NaN: the trainer's default

    @property
    def padded_length(self) -> int:
        """Every window of a batch is padded to the batch's longest one, so the longest window is what a group costs."""
        return max(len(w.token_ids) for m in self.messages for w in m.windows)


class GroupDataset(Dataset[Group]):
    def __init__(
        self,
        records: list[dict[str, Any]],
        pairs: list[dict[str, str]],
        tokenizer: PreTrainedTokenizerBase,
        max_tokens: int,
    ) -> None:
        encoded = encode_messages(tokenizer, [r["text"] for r in records], max_tokens)
        by_group: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            by_group.setdefault(record["group"], []).append(index)
        self.groups = [self._group(members, records, encoded, pairs) for members in by_group.values()]
        self.ids = [message_id for group in self.groups for message_id in group.ids]

    @staticmethod
    def _group(
        members: list[int], records: list[dict[str, Any]], encoded: list[EncodedMessage], pairs: list[dict[str, str]]
    ) -> Group:
        ids = [records[i]["id"] for i in members]
        position = {message_id: i for i, message_id in enumerate(ids)}
        inside = [p for p in pairs if p["warmer"] in position and p["cooler"] in position]
        return Group(
            ids,
            [encoded[i] for i in members],
            [records[i]["score"] / 100.0 for i in members],
            [(position[p["warmer"]], position[p["cooler"]]) for p in inside],
            [float(p.get("margin", math.nan)) for p in inside],
        )

    def repeat(self, prefix: str, times: int) -> int:
        """Let every group holding an id that starts with ``prefix`` appear ``times`` times; return how many do."""
        chosen = [group for group in self.groups if any(i.startswith(prefix) for i in group.ids)]
        self.groups += chosen * (times - 1)
        return len(chosen)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> Group:
        return self.groups[index]

    @property
    def lengths(self) -> list[int]:
        return [group.padded_length for group in self.groups]


class GroupCollator:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)

    def __call__(self, groups: list[Group]) -> dict[str, torch.Tensor]:
        windows: list[Window] = []
        targets: list[float] = []
        warmer: list[int] = []
        cooler: list[int] = []
        margins: list[float] = []
        for group in groups:
            offset = len(targets)
            for message in group.messages:
                # Renumber each window's owner to its message's position in this batch.
                windows += [replace(w, message=len(targets)) for w in message.windows]
                targets.append(0.0)
            targets[offset:] = group.targets
            warmer += [offset + w for w, _ in group.pairs]
            cooler += [offset + c for _, c in group.pairs]
            margins += group.margins
        batch = collate_windows(windows, *self.special)
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "pool_mask": batch.pool_mask,
            "window_message": batch.window_message,
            "labels": torch.tensor(targets, dtype=torch.float32),
            "pair_warmer": torch.tensor(warmer, dtype=torch.long),
            "pair_cooler": torch.tensor(cooler, dtype=torch.long),
            "pair_margin": torch.tensor(margins, dtype=torch.float32),
        }
