"""Tokenizers as ``model.encoding`` uses them: the ``Tokenizer`` protocol, and ``WordPieces``, which reads a Hugging
Face ``tokenizer.json`` with the ``tokenizers`` library alone.

Importing transformers costs about a second of a cold start (``diplotone score`` from a shell), and a version whose
engine is prepared needs nothing else from it: ``WordPieces`` answers the one call ``model.encoding`` makes with the
same ids and offsets as transformers' fast tokenizer on the same file (``tests/test_tokens.py`` compares them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

TOKENIZER_FILE = "tokenizer.json"
_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]"}  # BERT's, when a folder names none


class Tokenizer(Protocol):
    """What encoding a message needs of a tokenizer: transformers' fast tokenizers and ``WordPieces`` both fit."""

    @property
    def cls_token_id(self) -> Any: ...

    @property
    def sep_token_id(self) -> Any: ...

    @property
    def pad_token_id(self) -> Any: ...

    def __call__(self, text: Any, **options: Any) -> Any: ...


class WordPieces:
    """A ``tokenizer.json`` read without transformers: ``input_ids`` and ``offset_mapping`` of texts, no special tokens
    added, no truncation, no padding (``model.encoding`` adds [CLS] and [SEP] per window itself).

    >>> pieces = WordPieces(packaged_path())  # doctest: +SKIP
    >>> pieces(["Dear friend"])["input_ids"]  # doctest: +SKIP
    [[6203, 2767]]
    """

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer as Backend

        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"expected a fast tokenizer's {TOKENIZER_FILE} in {folder}; found none")
        self._backend = Backend.from_file(str(path))
        self._backend.no_truncation()
        self._backend.no_padding()
        names = _special_token_names(folder)
        ids = {role: self._backend.token_to_id(token) for role, token in names.items()}
        missing = [f"{role} {names[role]!r}" for role, found in ids.items() if found is None]
        if missing:
            raise ValueError(f"{path}: expected the special tokens in its vocabulary; found no {', '.join(missing)}")
        self.cls_token_id, self.sep_token_id, self.pad_token_id = ids["cls_token"], ids["sep_token"], ids["pad_token"]

    def __call__(self, text: Sequence[str], **options: Any) -> dict[str, list[Any]]:
        """The subset of transformers' call that encoding uses: always without special tokens; ``options`` such as
        ``verbose`` or ``return_attention_mask`` change nothing here, since only ids and offsets are returned."""
        if options.get("add_special_tokens", False):
            raise ValueError("WordPieces adds no special tokens: expected add_special_tokens=False")
        encodings = self._backend.encode_batch(list(text), add_special_tokens=False)
        return {"input_ids": [e.ids for e in encodings], "offset_mapping": [e.offsets for e in encodings]}


def _special_token_names(folder: Path) -> dict[str, str]:
    """The [CLS], [SEP] and [PAD] strings a folder names (``special_tokens_map.json``, else its tokenizer config)."""
    names = dict(_SPECIALS)
    for source in ("tokenizer_config.json", "special_tokens_map.json"):  # the map, read last, wins
        try:
            stored = json.loads((folder / source).read_text())
        except (OSError, ValueError):
            continue
        for role in names:
            value = stored.get(role)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                names[role] = value
    return names
