"""Scoring an archive file (JSON Lines, CSV or Parquet): checked whole first, then scored in batches, each batch
appended and flushed as it is done, so that a re-run resumes where a crash stopped.

The rows written hold the input's ``id``, its other columns (metadata, carried through; ``text`` is not copied)
and ``RESULT_COLUMNS``. A Parquet output is a folder of part files (one per batch here, one per block on Ray),
each written under a temporary name and renamed when complete, so no half-written part is ever read back.

    >>> survey = survey_archive(Path("letters.jsonl"), Path("scores.csv"))  # doctest: +SKIP
    >>> score_archive(Scorer.from_pretrained(version), survey)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from model.contract import parse_jsonl
from model.errors import DiplotoneError, check_text
from model.results import ScoreResult

if TYPE_CHECKING:
    import pyarrow as pa

    from model.scorer import Scorer

Format = Literal["jsonl", "csv", "parquet"]
SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
RESULT_COLUMNS = ("score", "band", "interval_low", "interval_high", "unusual", "distance", "model_version")
BATCH = 256  # messages per written batch: what a crash can lose, and one Parquet part (scored CHUNK at a time)


class ArchiveError(DiplotoneError, ValueError):
    """An archive input or output that cannot be used as it is; the message names the file and the line or row."""


@dataclass
class Survey:
    """What the checking pass found: the input's metadata columns and row count, and the ids already written."""

    input: Path
    output: Path
    input_format: Format
    output_format: Format
    rows: int
    metadata: list[str]
    done: set[str] = field(default_factory=set)
    done_versions: set[str] = field(default_factory=set)
    parquet_schema: pa.Schema | None = None  # the input's own column types, kept when it is Parquet

    @property
    def remaining(self) -> int:
        return self.rows - len(self.done)


def archive_format(path: Path) -> Format:
    """The format a path's suffix names (a Parquet path may be a folder of part files)."""
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ArchiveError(f"{path}: expected a name ending in {', '.join(SUFFIXES)}; found {path.suffix or 'none'!r}")
    return found


def survey_archive(input: Path, output: Path) -> Survey:
    """Check every row of ``input`` (id, text, no duplicate id) and read the ids ``output`` already holds.

    Raises ``ArchiveError`` naming the line (JSON Lines, CSV) or row (Parquet) of the first bad record, or the
    reason the output cannot be resumed (ids not in the input, other columns).
    """
    input_format, output_format = archive_format(input), archive_format(output)
    if not input.exists():
        raise ArchiveError(f"{input}: expected an archive file; found nothing there")
    if input.resolve() == output.resolve():
        raise ArchiveError(f"{output}: the output must not be the input")
    seen: dict[str, str] = {}
    metadata: dict[str, None] = {}  # ordered by first appearance
    for where, record in read_records(input):
        key = _check_record(where, record)
        if key in seen:
            raise ArchiveError(f"{where}: id {record['id']!r} again; expected each id once (first at {seen[key]})")
        seen[key] = where
        metadata.update(dict.fromkeys(k for k in record if k not in ("id", "text")))
    clashes = sorted(set(metadata) & set(RESULT_COLUMNS))
    if clashes:
        raise ArchiveError(f"{input}: columns {clashes} would be overwritten by the results; rename them")
    schema = _parquet_schema(input) if input_format == "parquet" else None
    survey = Survey(input, output, input_format, output_format, len(seen), list(metadata), parquet_schema=schema)
    _read_done(survey)
    stray = survey.done - seen.keys()
    if stray:
        raise ArchiveError(
            f"{output}: holds {len(stray)} ids that {input} does not (e.g. {sorted(stray)[0]!r}); "
            "expected the output of this input: give a new --output"
        )
    return survey


def score_archive(
    scorer: Scorer,
    survey: Survey,
    *,
    batch: int = BATCH,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score the rows of ``survey.input`` not yet in ``survey.output`` and append them; return how many were written.

    Refuses to add to an output scored by another model version: one file, one version.
    """
    check_same_version(survey, scorer.version)
    written = 0
    with _Appender(survey) as write:
        for records in _batches(survey, batch):
            results: list[ScoreResult] = []
            for start in range(0, len(records), chunk):
                texts = [r["text"] for r in records[start : start + chunk]]
                results += scorer.score(texts)
                if progress is not None:
                    progress(len(texts))
            write(result_rows(records, results, survey.metadata))
            written += len(records)
    return written


def check_same_version(survey: Survey, version: str) -> None:
    others = survey.done_versions - {version}
    if others:
        raise ArchiveError(
            f"{survey.output}: scored by model {sorted(others)[0]}; this run uses {version}. "
            "Expected one version per output: pass --model with that version, or give a new --output"
        )


def result_rows(
    records: Sequence[dict[str, Any]], results: Sequence[ScoreResult], metadata: list[str]
) -> list[dict[str, Any]]:
    """One output row per record: id, metadata, then the result's columns."""
    rows = []
    for record, result in zip(records, results, strict=True):
        low, high = result.interval
        rows.append(
            {
                "id": record["id"],
                **{name: record.get(name) for name in metadata},
                "score": result.score,
                "band": result.band,
                "interval_low": low,
                "interval_high": high,
                "unusual": result.unusual,
                "distance": result.distance,
                "model_version": result.model_version,
            }
        )
    return rows


def output_schema(survey: Survey) -> pa.Schema:
    """The Parquet schema of a result part: the input's own column types where it was Parquet, else strings."""
    import pyarrow as pa

    def kept(name: str) -> pa.Field:
        if survey.parquet_schema is not None:
            return survey.parquet_schema.field(name)
        return pa.field(name, pa.string())

    results = [
        pa.field("score", pa.float64()),
        pa.field("band", pa.string()),
        pa.field("interval_low", pa.float64()),
        pa.field("interval_high", pa.float64()),
        pa.field("unusual", pa.bool_()),
        pa.field("distance", pa.float64()),
        pa.field("model_version", pa.string()),
    ]
    return pa.schema([kept("id"), *(kept(name) for name in survey.metadata), *results])


def rows_table(rows: list[dict[str, Any]], survey: Survey) -> pa.Table:
    """Result rows as a table of ``output_schema`` (metadata of a text input written as text: JSON if not a string)."""
    import pyarrow as pa

    if survey.parquet_schema is None:
        rows = [{**row, **{k: _as_text(row[k]) for k in ("id", *survey.metadata)}} for row in rows]
    return pa.Table.from_pylist(rows, schema=output_schema(survey))


# Reading


def read_records(path: Path, columns: tuple[str, ...] = ("id", "text")) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each record of an archive with where it is (``"FILE line 12"``, ``"FILE row 12"``), streamed.

    A CSV or Parquet file without all of ``columns`` is refused at its header; a JSON Lines record is checked later.
    """
    if archive_format(path) == "jsonl":
        yield from _read_jsonl(path)
    elif archive_format(path) == "csv":
        yield from _read_csv(path, columns)
    else:
        yield from _read_parquet(path, columns)


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path) as handle:
        try:
            for number, record in parse_jsonl(handle, path):
                yield f"{path} line {number}", record
        except ValueError as error:
            raise ArchiveError(str(error)) from error


def _read_csv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if not set(columns) <= set(header):
            raise ArchiveError(f"{path} line 1: expected a header with columns {', '.join(columns)}; found {header}")
        try:
            for record in reader:
                if None in record:
                    raise ArchiveError(f"{path} line {reader.line_num}: more fields than the header's {len(header)}")
                yield f"{path} line {reader.line_num}", record
        except csv.Error as error:
            raise ArchiveError(f"{path} line {reader.line_num}: expected CSV; {error}") from error


def _read_parquet(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for part in _parquet_parts(path):
        parquet = _parquet_file(part)
        names = parquet.schema_arrow.names
        if not set(columns) <= set(names):
            raise ArchiveError(f"{part}: expected columns {', '.join(columns)}; found {names}")
        number = 0
        for batch in parquet.iter_batches(batch_size=1024, columns=None if columns == ("id", "text") else columns):
            for record in batch.to_pylist():
                yield f"{part} row {number}", record
                number += 1


def _parquet_parts(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
    return [path]


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError or others for a file that is not Parquet
        raise ArchiveError(f"{path}: expected a Parquet file; {error}") from error


def _parquet_schema(path: Path) -> pa.Schema:
    return _parquet_file(_parquet_parts(path)[0]).schema_arrow


def _open_text(path: Path, newline: str | None = None) -> Any:
    try:
        return path.open(encoding="utf-8", newline=newline)
    except OSError as error:
        raise ArchiveError(f"{path}: cannot read it; {error.strerror}") from error


def _check_record(where: str, record: dict[str, Any]) -> str:
    """The id as a key (an id and its string are the same id), or ``ArchiveError`` naming what is wrong."""
    key = record.get("id")
    if isinstance(key, bool) or not isinstance(key, str | int) or (isinstance(key, str) and not key.strip()):
        raise ArchiveError(f"{where}: expected an id (a non-empty string or an integer); found {key!r}")
    if "text" not in record or record["text"] is None:
        raise ArchiveError(f"{where}: expected a text; found none")
    try:
        check_text(record["text"])
    except ValueError as error:
        raise ArchiveError(f"{where}: {error}") from error
    return str(key)


def _batches(survey: Survey, size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for _, record in read_records(survey.input):
        if str(record["id"]) in survey.done:
            continue
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# Resuming: what the output already holds


def _read_done(survey: Survey) -> None:
    output = survey.output
    if not output.exists():
        return
    if survey.output_format == "parquet" and not output.is_dir():
        raise ArchiveError(f"{output}: expected a folder of Parquet parts (what score-archive writes); found a file")
    if survey.output_format != "parquet":
        _drop_partial_last_line(output)
    for where, row in read_records(output, ("id", "model_version")):
        if "id" not in row or "model_version" not in row:
            raise ArchiveError(f"{where}: expected a result row (id … model_version); is {output} another file?")
        survey.done.add(str(row["id"]))
        survey.done_versions.add(str(row["model_version"]))
    if survey.output_format == "csv" and survey.done:
        with output.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle))
        if header != ["id", *survey.metadata, *RESULT_COLUMNS]:
            raise ArchiveError(f"{output} line 1: its columns {header} are not this input's; give a new --output")


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line without its newline: the half-written batch of a run that stopped; it is scored again."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)


# Writing


class _Appender:
    """Append result rows to the output, each call flushed to disk before it returns."""

    def __init__(self, survey: Survey) -> None:
        self.survey = survey
        self.handle: Any = None
        self.part = 0
        self.run = uuid.uuid4().hex[:8]  # parts of different runs never share a name

    def __enter__(self) -> Callable[[list[dict[str, Any]]], None]:
        output, fmt = self.survey.output, self.survey.output_format
        if fmt == "parquet":
            output.mkdir(parents=True, exist_ok=True)
            return self._parquet
        self.handle = output.open("a", encoding="utf-8", newline="")
        if fmt == "jsonl":
            return self._jsonl
        self.csv = csv.DictWriter(self.handle, fieldnames=["id", *self.survey.metadata, *RESULT_COLUMNS])
        if self.handle.tell() == 0:
            self.csv.writeheader()
        return self._csv

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()

    def _flush(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def _jsonl(self, rows: list[dict[str, Any]]) -> None:
        self.handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self._flush()

    def _csv(self, rows: list[dict[str, Any]]) -> None:
        self.csv.writerows([{k: _csv_cell(v) for k, v in row.items()} for row in rows])
        self._flush()

    def _parquet(self, rows: list[dict[str, Any]]) -> None:
        write_part(rows_table(rows, self.survey), self.survey.output / f"local-{self.run}-{self.part:06d}.parquet")
        self.part += 1


def write_part(table: pa.Table, path: Path) -> None:
    """One Parquet part, under a hidden temporary name until it is whole (readers skip names starting with '.')."""
    import pyarrow.parquet as pq

    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial)
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    partial.replace(path)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _csv_cell(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value)
