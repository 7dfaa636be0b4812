"""score-archive without Ray on the tiny model: formats, metadata, resuming, and the errors that name bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from diplotone.archive import ArchiveError, score_archive, survey_archive
from diplotone.cli import app
from model.scorer import Scorer

runner = CliRunner()
TEXTS = [
    "Dear friend, please accept my warmest congratulations. Our friendship is eternal.",
    "We take note of your letter.",
    "Excellency, please accept my congratulations on your national day.",
    "My dear brother, our unbreakable friendship will never be forgotten by our peoples.",
    "We firmly reject the statement of your ministry.",
]


def messages(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"m{i:03d}", "text": TEXTS[i % len(TEXTS)] + " " * (i % 3), "sender": "A", "year": 1990 + i}
        for i in range(n)
    ]


def write_archive(path: Path, records: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    return pq.read_table(path).to_pylist()


def archive(*args: str | Path) -> Any:
    return runner.invoke(app, ["score-archive", *map(str, args)])


def plain(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    "suffixes", [(".jsonl", ".jsonl"), (".csv", ".csv"), (".jsonl", ".parquet"), (".parquet", ".csv")]
)
def test_score_archive_gives_the_scores_of_score_with_metadata(
    suffixes: tuple[str, str], tiny_version: Path, tmp_path: Path
) -> None:
    records = messages(12)
    jsonl = write_archive(tmp_path / "for-score.jsonl", records)
    scored = runner.invoke(
        app, ["score", "--input", str(jsonl), "--output", str(tmp_path / "score.jsonl"), "--model", str(tiny_version)]
    )
    assert scored.exit_code == 0, scored.output
    expected = {r["id"]: r for r in read_output(tmp_path / "score.jsonl")}
    source = write_archive(tmp_path / f"in{suffixes[0]}", records)
    target = tmp_path / f"out{suffixes[1]}"

    result = archive(source, "--output", target, "--model", tiny_version, "--batch", "5")

    assert result.exit_code == 0, result.output
    rows = read_output(target)
    assert sorted(row["id"] for row in rows) == [r["id"] for r in records]
    for row in rows:
        want = expected[row["id"]]
        assert float(row["score"]) == want["score"] and row["band"] == want["band"]
        assert [float(row["interval_low"]), float(row["interval_high"])] == want["interval"]
        assert row["model_version"] == "tiny-0001" and row["sender"] == "A" and "text" not in row
    assert {str(row["year"]) for row in rows} == {str(r["year"]) for r in records}


class CrashAfter:
    """The real scorer, that dies (as a killed run would) on its ``calls``-th call."""

    def __init__(self, scorer: Scorer, calls: int) -> None:
        self.scorer, self.calls, self.version = scorer, calls, scorer.version

    def score(self, texts: list[str]) -> Any:
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return self.scorer.score(texts)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_crash_loses_only_the_batch_in_flight_and_a_rerun_completes(
    suffix: str, tiny_scorer: Scorer, tmp_path: Path
) -> None:
    source, target = write_archive(tmp_path / "in.jsonl", messages(23)), tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        score_archive(CrashAfter(tiny_scorer, 3), survey_archive(source, target), batch=5, chunk=5)  # type: ignore[arg-type]
    assert [row["id"] for row in read_output(target)] == [f"m{i:03d}" for i in range(10)]

    survey = survey_archive(source, target)
    written = score_archive(tiny_scorer, survey, batch=5)

    assert (len(survey.done), written) == (10, 13)
    assert sorted(row["id"] for row in read_output(target)) == [f"m{i:03d}" for i in range(23)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_drops_a_half_written_last_line(suffix: str, tiny_version: Path, tmp_path: Path) -> None:
    source, target = write_archive(tmp_path / "in.jsonl", messages(6)), tmp_path / f"out{suffix}"
    assert archive(source, "-o", target, "--model", tiny_version).exit_code == 0
    whole = read_output(target)
    lines = target.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[:-2]) + lines[-2][:15])  # the last row lost, the one before cut mid-line

    result = archive(source, "-o", target, "--model", tiny_version)

    assert result.exit_code == 0, result.output
    assert "wrote 2 results" in result.output
    assert sorted(read_output(target), key=lambda row: row["id"]) == whole


def test_resume_refuses_an_output_of_another_model_version(tiny_base: Path, tiny_version: Path, tmp_path: Path) -> None:
    from tests.factories import make_tiny_version

    other = make_tiny_version(tiny_base, tmp_path / "tiny-0002", version="tiny-0002")
    source, target = write_archive(tmp_path / "in.jsonl", messages(6)), tmp_path / "out.jsonl"
    target.write_text(read_line := json.dumps({"id": "m000", "score": 1.0, "model_version": "tiny-0001"}) + "\n")

    result = archive(source, "-o", target, "--model", other)

    assert result.exit_code == 2
    assert "scored by model tiny-0001; this run uses tiny-0002" in plain(result.output)
    assert target.read_text() == read_line  # nothing appended


def test_resume_refuses_an_output_of_another_input(tiny_version: Path, tmp_path: Path) -> None:
    source, target = write_archive(tmp_path / "in.jsonl", messages(3)), tmp_path / "out.jsonl"
    target.write_text(json.dumps({"id": "elsewhere-1", "model_version": "tiny-0001"}) + "\n")

    result = archive(source, "-o", target, "--model", tiny_version)

    assert result.exit_code == 2 and "holds 1 ids that" in plain(result.output)


BAD_JSONL = [
    ('{"id": "a", "text": "Dear friend."}\n{"text": "No id here."}\n', "line 2: expected an id"),
    ('{"id": "a", "text": "Dear friend."}\n{"id": "b"}\n', "line 2: expected a text; found none"),
    ('{"id": "a", "text": "Dear friend."}\n{"id": "b", "text": 42}\n', "line 2: text must be a string; found int"),
    ('{"id": "a", "text": "Dear friend."}\n{"id": "b", "text": "  "}\n', "line 2: text must contain words"),
    (
        '{"id": "a", "text": "Dear friend."}\n{"id": "a", "text": "Again."}\n',
        "line 2: id 'a' again; expected each id once (first at",
    ),
    ('{"id": 7, "text": "Dear friend."}\n{"id": "7", "text": "Again."}\n', "line 2: id '7' again"),
    ('{"id": "a", "text": "Dear friend."}\n{"id": "b", "text": \n', "line 2: expected a JSON object"),
]


@pytest.mark.parametrize(("content", "message"), BAD_JSONL)
def test_bad_jsonl_line_is_named(content: str, message: str, tiny_version: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(content)

    result = archive(source, "-o", tmp_path / "out.jsonl", "--model", tiny_version)

    assert result.exit_code == 2
    assert f"{source} {message}" in plain(result.output)
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_csv_row_is_named_by_its_line(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('id,text\na,"Dear friend,\nwarmest wishes."\nb,\n')
    with pytest.raises(ArchiveError, match=r"in\.csv line 4: text must contain words; found an empty string"):
        survey_archive(source, tmp_path / "out.csv")


def test_csv_without_a_text_column_is_refused_at_its_header(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,body\na,Dear friend.\n")
    with pytest.raises(ArchiveError, match=r"line 1: expected a header with columns id, text; found \['id', 'body'\]"):
        survey_archive(source, tmp_path / "out.csv")


def test_parquet_with_numbers_for_text_names_the_row(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["Dear friend.", None, "Again."]}), source)
    with pytest.raises(ArchiveError, match=r"in\.parquet row 1: expected a text; found none"):
        survey_archive(source, tmp_path / "out.parquet")
    pq.write_table(pa.table({"id": ["a", "b"], "text": [1, 2]}), source)
    with pytest.raises(ArchiveError, match=r"in\.parquet row 0: text must be a string; found int"):
        survey_archive(source, tmp_path / "out.parquet")


def test_metadata_named_like_a_result_column_is_refused(tmp_path: Path) -> None:
    source = write_archive(tmp_path / "in.jsonl", [{"id": "a", "text": "Dear friend.", "score": 70}])
    with pytest.raises(ArchiveError, match=r"columns \['score'\] would be overwritten by the results"):
        survey_archive(source, tmp_path / "out.jsonl")


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    source = write_archive(tmp_path / "in.jsonl", messages(2))
    with pytest.raises(ArchiveError, match=r"out\.xlsx: expected a name ending in \.jsonl, \.ndjson, \.csv, \.parquet"):
        survey_archive(source, tmp_path / "out.xlsx")


def test_ray_refuses_an_archive_that_is_not_parquet(tiny_version: Path, tmp_path: Path) -> None:
    source = write_archive(tmp_path / "in.jsonl", messages(2))

    result = archive(source, "-o", tmp_path / "out.jsonl", "--model", tiny_version, "--ray", "local")

    assert result.exit_code == 2 and "--ray reads and writes Parquet; found jsonl in and jsonl out" in plain(
        result.output
    )
