"""Domain errors of diplotone. Each message says what was expected and what was found.

The service maps these to HTTP statuses in exactly one place (service/errors.py).
"""

from __future__ import annotations


class DiplotoneError(Exception):
    """Base class of every error diplotone raises on purpose."""


class EmptyInput(DiplotoneError, ValueError):
    """A text to score is empty or only whitespace."""


class InputTooLong(DiplotoneError, ValueError):
    """A text is longer than the configured limit."""

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"text has {length} characters; the limit is {limit}")


class ArtifactCorrupt(DiplotoneError):
    """A model file is missing or does not match the sha256 its manifest records."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


class UnknownVersion(DiplotoneError, LookupError):
    """A model version that the registry does not hold."""


def check_text(text: object, *, max_chars: int | None = None, field: str = "text") -> str:
    """Return ``text`` if it can be scored, else raise the error that says why.

    >>> check_text("Dear friend")
    'Dear friend'
    """
    if not isinstance(text, str):
        raise EmptyInput(f"{field} must be a string; found {type(text).__name__}")
    if not text.strip():
        raise EmptyInput(f"{field} must contain words; found {'an empty string' if not text else 'only whitespace'}")
    if max_chars is not None and len(text) > max_chars:
        raise InputTooLong(len(text), max_chars)
    return text
