"""``WordPieces`` (tokenizers alone) gives transformers' ids and offsets, on the tiny base and on the real MiniLM's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from model.base import packaged_path
from model.contract import CORPUS_DIR
from model.tokens import WordPieces

ODD = [
    "Dear friend,  please accept\tmy warmest congratulations!",
    "Ẹ kú àṣeyọrí — Ваше превосходительство, مع خالص التحيات .. 敬祝 ✨ @PresidentX",
    "",
    '[...] the President [said] he "deeply regretted" the decision [...]',
    "﻿A BOM, then ZERO\u200bWIDTH and e\u0301 combining.",
]


def _same_as_transformers(folder: Path, texts: list[str]) -> None:
    ours, theirs = WordPieces(folder), AutoTokenizer.from_pretrained(str(folder))
    expected = theirs(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    found = ours(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    assert found["input_ids"] == expected["input_ids"]
    assert [[tuple(o) for o in row] for row in found["offset_mapping"]] == [
        [tuple(o) for o in row] for row in expected["offset_mapping"]
    ]
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id) == (
        theirs.cls_token_id,
        theirs.sep_token_id,
        theirs.pad_token_id,
    )


def test_word_pieces_match_transformers_on_the_tiny_base(tiny_base: Path) -> None:
    _same_as_transformers(tiny_base, ODD)


def test_word_pieces_match_transformers_on_minilm_over_the_corpus() -> None:
    rows = [json.loads(line) for line in (CORPUS_DIR / "messages.jsonl").read_text().splitlines()[::7]]
    _same_as_transformers(packaged_path(), ODD + [row["text"] for row in rows])


def test_word_pieces_never_truncate(tiny_base: Path) -> None:
    long_text = "friendship " * 2000
    assert len(WordPieces(tiny_base)([long_text])["input_ids"][0]) >= 2000


def test_word_pieces_refuse_special_tokens(tiny_base: Path) -> None:
    with pytest.raises(ValueError, match="expected add_special_tokens=False"):
        WordPieces(tiny_base)(["Dear friend"], add_special_tokens=True)


def test_a_folder_without_tokenizer_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"expected a fast tokenizer's tokenizer.json in {tmp_path}"):
        WordPieces(tmp_path)
