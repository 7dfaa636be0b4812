"""`diplotone timeline` and `diplotone plot`: a stored relation's absences in words, and the pictures."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from diplotone.cli import app
from model import ScoreResult
from service.settings import Settings
from service.store.db import Database
from service.store.repository import MessageFields, add_messages

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RELATION = ["--sender", "Kim Jong Un", "--recipient", "Xi Jinping", "--as-of", "2026-01-15"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A store holding national day messages 2018-2025 from Kim to Xi, 2021 unpublished and 2024 missing."""
    database = Database.open(Settings(data_dir=tmp_path).sqlalchemy_url)
    years = [2018, 2019, 2020, 2021, 2022, 2023, 2025]
    fields = [
        MessageFields(
            None if y == 2021 else f"Greetings {y}.", "Kim Jong Un", "Xi Jinping", dt.date(y, 9, 9), "national_day"
        )
        for y in years
    ]
    results = [
        None if y == 2021 else ScoreResult(40.0 + 5 * i, "cordial", (30.0 + 5 * i, 50.0 + 5 * i), [], [], "v")
        for i, y in enumerate(years)
    ]
    with database.sessions() as session:
        add_messages(session, fields, results)
    database.close()
    return tmp_path


def _plain(output: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m|[│╭╮╰╯─]", " ", output).split())


def test_timeline_prints_each_message_and_the_absence(data_dir: Path) -> None:
    result = runner.invoke(app, ["timeline", *RELATION, "--data-dir", str(data_dir)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len([line for line in lines if line.startswith("20")]) == 7
    assert any("unpublished" in line and line.startswith("2021-09-09") for line in lines)
    assert "absence: no national_day message in 2024 after 6 years in a row" in lines
    assert "recurring: national_day (7 years, ~09-09)" in result.output


def test_plot_timeline_writes_a_png(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "relation.png"

    result = runner.invoke(app, ["plot", "timeline", *RELATION, "-o", str(target), "--data-dir", str(data_dir)])

    assert result.exit_code == 0, result.output
    assert "7 messages, 1 absences flagged" in result.output
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = imread(target).shape
    assert width > 1000 and height > 500  # 10 × 4.8 inches at 150 dpi, trimmed to the drawing


def test_plot_timeline_writes_an_svg_with_the_absence_labelled(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "relation.svg"

    result = runner.invoke(app, ["plot", "timeline", *RELATION, "-o", str(target), "--data-dir", str(data_dir)])

    assert result.exit_code == 0, result.output
    drawn = " ".join(target.read_text().split())
    assert "no national_day 2024" in drawn and "unpublished" in drawn


def test_plot_timeline_to_another_format_is_refused(data_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["plot", "timeline", *RELATION, "-o", str(tmp_path / "x.jpg"), "--data-dir", str(data_dir)]
    )

    assert result.exit_code == 2
    assert "expected a file ending .png or .svg; found 'x.jpg'" in _plain(result.output)


def test_plot_timeline_of_an_unknown_relation_is_refused(data_dir: Path, tmp_path: Path) -> None:
    args = ["plot", "timeline", "--sender", "A", "--recipient", "B", "-o", str(tmp_path / "x.png")]

    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])

    assert result.exit_code == 2
    assert "no stored message from 'A' to 'B'" in _plain(result.output)
    assert not (tmp_path / "x.png").exists()


def test_plot_compare_writes_a_png(tiny_version: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Dear friend, please accept my warmest congratulations. Our friendship is eternal.")
    (tmp_path / "b.txt").write_text("Dear friend, please accept my congratulations.")
    target = tmp_path / "compare.png"

    args = ["plot", "compare", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "-o", str(target)]
    result = runner.invoke(app, [*args, "--model", str(tiny_version)])

    assert result.exit_code == 0, result.output
    assert "P(B warmer)" in result.output
    assert target.read_bytes()[:8] == PNG_SIGNATURE
