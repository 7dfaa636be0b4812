"""The one import direction of docs/design.md: service → model ← training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "model": ("fastapi", "starlette", "sqlalchemy", "alembic", "service", "training", "uvicorn"),
    "training": ("fastapi", "starlette", "sqlalchemy", "alembic", "service", "uvicorn"),
    "service": ("training",),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layers(package: str) -> None:
    pattern = re.compile(r"^\s*(?:from|import)\s+(" + "|".join(FORBIDDEN[package]) + r")\b", re.MULTILINE)
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in (ROOT / package).rglob("*.py")
        for match in pattern.finditer(path.read_text())
    ]
    assert offenders == []
