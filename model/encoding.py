"""Sentence-aligned windows: how a message of any length reaches an encoder of fixed length.

A message is tokenized once; its sentences are packed greedily into windows of at most ``max_tokens`` tokens
(including [CLS] and [SEP]); a sentence longer than a window is cut at token boundaries. Every token lands in exactly
one window, so nothing is truncated, and because the model mean-pools over content tokens, the message embedding is
the same mean however many windows it spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model.text import Span, split_sentences
from model.tokens import Tokenizer


@dataclass(frozen=True)
class Window:
    message: int  # index of the owning message in the encoded list
    token_ids: list[int]  # content tokens only; [CLS]/[SEP] are added in collate
    token_sentences: list[int]  # sentence index (within the message) of each content token


@dataclass(frozen=True)
class EncodedMessage:
    sentences: list[Span]
    windows: list[Window]


def encode_messages(tokenizer: Tokenizer, texts: Sequence[str], max_tokens: int) -> list[EncodedMessage]:
    """Tokenize ``texts`` and cut each into sentence-aligned windows of at most ``max_tokens``."""
    capacity = max_tokens - 2  # room for [CLS] and [SEP]
    # No truncation here (verbose=False silences the length warning): the windows below take every token.
    tokenized = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    encoded = []
    for index, text in enumerate(texts):
        sentences = split_sentences(text)
        ids: list[int] = tokenized["input_ids"][index]
        offsets: list[tuple[int, int]] = tokenized["offset_mapping"][index]
        token_sentences = _assign_sentences(offsets, sentences)
        encoded.append(EncodedMessage(sentences, _pack(index, ids, token_sentences, capacity)))
    return encoded


def _assign_sentences(offsets: list[tuple[int, int]], sentences: list[Span]) -> list[int]:
    # Tokens come in text order, so one forward walk over the sentences assigns them all.
    assigned, current = [], 0
    for start, _ in offsets:
        while current + 1 < len(sentences) and start >= sentences[current + 1].start:
            current += 1
        assigned.append(current)
    return assigned


def _pack(message: int, ids: list[int], token_sentences: list[int], capacity: int) -> list[Window]:
    """Fill windows sentence by sentence, aiming at equal sizes: a message of 1.1 windows becomes two halves rather
    than a full window and a scrap, since a scrap's tokens are encoded with almost no context."""
    pieces = _sentence_pieces(token_sentences, capacity)
    target = -(-len(ids) // max(1, -(-len(ids) // capacity)))  # ceil(tokens / ceil(tokens / capacity))
    windows: list[Window] = []
    current: list[int] = []  # token positions of the window being filled
    for piece in pieces:
        if current and (len(current) + len(piece) > capacity or len(current) >= target):
            windows.append(_window(message, ids, token_sentences, current))
            current = []
        current.extend(piece)
    if current or not windows:
        windows.append(_window(message, ids, token_sentences, current))
    return windows


def _sentence_pieces(token_sentences: list[int], capacity: int) -> list[list[int]]:
    """Token positions grouped by sentence, a sentence longer than ``capacity`` cut into several pieces."""
    pieces: list[list[int]] = []
    for position, sentence in enumerate(token_sentences):
        fresh = not pieces or token_sentences[pieces[-1][0]] != sentence or len(pieces[-1]) == capacity
        if fresh:
            pieces.append([])
        pieces[-1].append(position)
    return pieces


def _window(message: int, ids: list[int], token_sentences: list[int], positions: list[int]) -> Window:
    return Window(message, [ids[p] for p in positions], [token_sentences[p] for p in positions])


@dataclass
class WindowBatch:
    """Padded tensors for a list of windows; ``pool_mask`` is 1 on content tokens, 0 on specials and padding."""

    input_ids: torch.Tensor  # (windows, tokens)
    attention_mask: torch.Tensor  # (windows, tokens)
    pool_mask: torch.Tensor  # (windows, tokens)
    token_sentences: torch.Tensor  # (windows, tokens), -1 where pool_mask is 0
    window_message: torch.Tensor  # (windows,)


def collate_windows(windows: Sequence[Window], cls_id: int, sep_id: int, pad_id: int) -> WindowBatch:
    length = max(len(w.token_ids) for w in windows) + 2
    count = len(windows)
    input_ids = torch.full((count, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((count, length), dtype=torch.long)
    pool_mask = torch.zeros((count, length), dtype=torch.float32)
    token_sentences = torch.full((count, length), -1, dtype=torch.long)
    for row, window in enumerate(windows):
        n = len(window.token_ids)
        input_ids[row, : n + 2] = torch.tensor([cls_id, *window.token_ids, sep_id])
        attention_mask[row, : n + 2] = 1
        pool_mask[row, 1 : n + 1] = 1.0
        token_sentences[row, 1 : n + 1] = torch.tensor(window.token_sentences, dtype=torch.long)
    window_message = torch.tensor([w.message for w in windows], dtype=torch.long)
    return WindowBatch(input_ids, attention_mask, pool_mask, token_sentences, window_message)


def count_tokens(tokenizer: Tokenizer, texts: Sequence[str], max_tokens: int) -> list[int]:
    """Tokens the encoder reads for each text: its word pieces plus [CLS] and [SEP] for each window it needs.

    A budget, counted without the sentence packing: a text whose sentences pack unevenly may take one window more.

    >>> count_tokens(tokenizer, ["Dear friend"], 256)  # doctest: +SKIP
    [4]
    """
    capacity = max_tokens - 2  # room for [CLS] and [SEP]
    tokenized = tokenizer(
        list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )
    pieces: list[list[int]] = tokenized["input_ids"]
    return [len(ids) + 2 * max(1, -(-len(ids) // capacity)) for ids in pieces]
