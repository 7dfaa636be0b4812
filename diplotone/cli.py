"""The ``diplotone`` command: the one module that may import model, training and service. Kept thin."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

app = typer.Typer(help="Score, compare and train models of diplomatic effusiveness.", no_args_is_help=True)
models_app = typer.Typer(help="List and activate model versions.", no_args_is_help=True)
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="Create, list and revoke API keys of the service.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(help="The service's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
plot_app = typer.Typer(help="Pictures: a relation's timeline, a comparison (PNG or SVG).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")

DataDir = Annotated[Path, typer.Option(envvar="DIPLOTONE_DATA_DIR", help="data directory (registry under models/)")]
ModelOption = Annotated[Path | None, typer.Option("--model", help="a model version folder (default: the active one)")]
EngineOption = Annotated[
    str,
    typer.Option(
        envvar="DIPLOTONE_ENGINE",
        help="torch (the reference), onnx-fp32 or onnx-int8: an ONNX engine is used where the service or a training "
        "run has prepared it for the version, else torch",
    ),
]
CHUNK = 64  # messages scored per call when reading a file: bounded memory, a moving progress bar


def _scorer(model: Path | None, data_dir: Path, engine: str = "torch") -> Any:
    """The version's Scorer on ``engine`` where that is prepared (no torch encoder, no transformers: a cold start
    in about half the time), else on torch."""
    from model.engines import ENGINES
    from model.scorer import Scorer

    if engine not in ENGINES:
        raise typer.BadParameter(f"expected one of {', '.join(ENGINES)}; found {engine!r}", param_hint="--engine")
    folder = _model_folder(model, data_dir)
    prepared = Scorer.from_prepared(folder, engine=engine) if engine != "torch" else None
    return prepared or Scorer.from_pretrained(folder)


def _model_folder(model: Path | None, data_dir: Path) -> Path:
    """``--model`` if given, else the registry's active version (the registry seeded from model/shipped/ first)."""
    from model.registry import Registry

    if model is not None:
        return model
    registry = Registry(data_dir / "models")
    registry.seed()
    return Path(registry.active_path())


@app.command()
def score(
    text: Annotated[str | None, typer.Argument(help="a message to score (or use --input)")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="JSON Lines {id, text, ...}; - for stdin")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON Lines results; - for stdout")] = Path("-"),
    exact: Annotated[bool, typer.Option(help="exact leave-one-out contributions (slower)")] = False,
    model: ModelOption = None,
    engine: EngineOption = "onnx-int8",
    data_dir: DataDir = Path("var"),
) -> None:
    """Score one text (readable) or a JSON Lines file (one result per line, keeping each input's id)."""
    if (text is None) == (input is None):
        raise typer.BadParameter("give either a TEXT or --input FILE, not both and not neither")
    if text is not None:
        _print_result(_scorer(model, data_dir, engine).score([text], exact_contributions=exact)[0])
        return
    assert input is not None
    records = _read_jsonl(input)  # read (and reject a bad line) before spending seconds on loading the model
    scorer = _scorer(model, data_dir, engine)
    from tqdm import tqdm

    with _open_out(output) as out, tqdm(total=len(records), unit="msg", disable=None, file=sys.stderr) as bar:
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            results = scorer.score([r["text"] for r in chunk], exact_contributions=exact, progress=bar.update)
            for record, result in zip(chunk, results, strict=True):
                out.write(json.dumps({"id": record.get("id"), **result.to_dict()}) + "\n")


@app.command()
def compare(
    file_a: Annotated[Path, typer.Argument(help="the earlier (or reference) message, as a text file")],
    file_b: Annotated[Path, typer.Argument(help="the later message, as a text file")],
    as_json: Annotated[bool, typer.Option("--json", help="print the full comparison as JSON")] = False,
    model: ModelOption = None,
    engine: EngineOption = "onnx-int8",
    data_dir: DataDir = Path("var"),
) -> None:
    """Explain why B is warmer or cooler than A."""
    comparison = _scorer(model, data_dir, engine).compare(_read_text(file_a), _read_text(file_b))
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=2))
        return
    typer.echo(f"P(B warmer than A) = {comparison.p_b_warmer:.2f}, delta {comparison.delta:+.1f}")
    for line in comparison.explanation.summary:
        typer.echo(f"  {line}")


class FineTuning(StrEnum):
    lora = "lora"
    full = "full"


@app.command()
def train(
    data: Annotated[Path | None, typer.Option(help="folder with messages.jsonl and pairs.jsonl")] = None,
    snapshot: Annotated[Path | None, typer.Option(help="a service snapshot JSON file instead of --data")] = None,
    ship: Annotated[bool, typer.Option(help="make the result the shipped default (model/shipped/)")] = False,
    epochs: Annotated[int | None, typer.Option(help="override the recipe's epochs")] = None,
    threads: Annotated[int, typer.Option(help="torch threads")] = 2,
    seed: Annotated[int, typer.Option()] = 13,
    base: Annotated[str | None, typer.Option(help="a local Hugging Face model folder (default: MiniLM)")] = None,
    deletion_pairs: Annotated[
        bool, typer.Option(help="also rank each message above itself without its warmest sentence")
    ] = False,
    mode: Annotated[
        FineTuning, typer.Option(help="lora: an adapter on the top layers; full: every weight of the encoder")
    ] = FineTuning.lora,
    data_dir: DataDir = Path("var"),
) -> None:
    """Fine-tune a version. Into the data directory's registry, promoted if it passes the gate; or, with --ship,
    into model/shipped/ as the default that the service seeds itself with."""
    import tempfile

    from model.contract import CORPUS_DIR
    from model.registry import SHIPPED, Registry
    from training.args import FULL_LEARNING_RATE, TrainArgs
    from training.corpus import load_corpus, load_snapshot
    from training.pipeline import retrain
    from training.pipeline import ship as ship_version
    from training.pipeline import train as run_training

    corpus = load_snapshot(snapshot) if snapshot else load_corpus(data or CORPUS_DIR)
    overrides: dict[str, Any] = {"epochs": epochs} if epochs else {}
    if mode is FineTuning.full:
        overrides["learning_rate"] = FULL_LEARNING_RATE
    args = TrainArgs(base=base, threads=threads, seed=seed, deletion_pairs=deletion_pairs, mode=mode.value, **overrides)
    if ship:
        with tempfile.TemporaryDirectory() as scratch:
            result = run_training(args, corpus, Registry(Path(scratch)), log=typer.echo, with_baselines=True)
            typer.echo(f"shipped {ship_version(result, SHIPPED)}")
        return
    registry = Registry(data_dir / "models")
    registry.seed()
    outcome = retrain(args, corpus, registry, log=typer.echo)
    assert outcome.version is not None  # retrain raises rather than report an error
    if outcome.passed:
        registry.activate(outcome.version)  # the command line's own promotion; a running service is not told
        typer.echo(f"promoted {outcome.version} (was {outcome.previous})")
    else:
        typer.echo(f"kept {outcome.previous}; {outcome.version} rejected: " + "; ".join(outcome.reasons))


@app.command()
def evaluate(
    data: Annotated[Path | None, typer.Option(help="folder with messages.jsonl and pairs.jsonl")] = None,
    baselines: Annotated[bool, typer.Option(help="also run the baselines")] = True,
    as_json: Annotated[Path | None, typer.Option("--json", help="also write the figures to this file")] = None,
    test_ids: Annotated[
        str, typer.Option(help="only the test messages whose id starts with this (h8-, h10-: the held-out passes)")
    ] = "",
    by: Annotated[str, typer.Option(help="also give every figure within each value of this column")] = "kind",
    model: ModelOption = None,
    data_dir: DataDir = Path("var"),
) -> None:
    """Evaluate a version on the test split, beside the baselines, with the same figures for each."""
    from model.contract import CORPUS_DIR
    from training import baselines as baseline_models
    from training.corpus import load_corpus
    from training.evaluation import evaluate_scorer, scores_only
    from training.metrics import SUBTLE_GAP

    corpus = load_corpus(data or CORPUS_DIR).with_test_ids(test_ids)
    if not len(corpus.split("test")):
        raise typer.BadParameter(f"no test message has an id starting with {test_ids!r}", param_hint="--test-ids")
    scorer = _scorer(model, data_dir)
    rows = {f"diplotone {scorer.version}": evaluate_scorer(corpus, scorer.predict_with_distance, by=by)}
    if baselines:
        for name, predict in baseline_models.baselines(corpus).items():
            rows[name] = evaluate_scorer(corpus, scores_only(predict), by=by)
    test = next(iter(rows.values()))["test"]
    typer.echo(
        f"test split: {int(test['n'])} messages, {int(test['pairs'])} judged pairs "
        f"({int(test['subtle_pairs'])} subtle: labels under {SUBTLE_GAP:.0f} points apart)"
    )
    _figures_table({name: figures["test"] for name, figures in rows.items()}, "scorer")
    values = sorted({value for figures in rows.values() for value in figures[f"test_by_{by}"]})
    for value in values:
        typer.echo(f"\ntest messages of {by} {value!r}:")
        _figures_table({n: f[f"test_by_{by}"][value] for n, f in rows.items() if value in f[f"test_by_{by}"]}, "scorer")
    if as_json is not None:
        as_json.write_text(json.dumps({"scorers": rows}, indent=2) + "\n")


_COLUMNS = {
    "n": "n",
    "spearman": "spearman",
    "mae": "mae",
    "mean_error": "bias",
    "pairwise_accuracy": "pairwise",
    "pairs": "pairs",
    "subtle_pairwise_accuracy": "subtle",
    "band_accuracy": "band acc.",
    "interval_coverage": "coverage",
    "interval_width": "width",
}


def _figures_table(rows: dict[str, dict[str, float]], title: str) -> None:
    typer.echo(f"{title:<40}" + "".join(f"{name:>10}" for name in _COLUMNS.values()))
    for name, figures in rows.items():
        cells = "".join(f"{figures.get(key, float('nan')):>10.3f}" for key in _COLUMNS)
        typer.echo(f"{name[:39]:<40}" + cells)


@models_app.command("list")
def models_list(data_dir: DataDir = Path("var")) -> None:
    """The versions in the registry, the active one marked."""
    from model.registry import Registry

    registry = Registry(data_dir / "models")
    registry.seed()
    for info in registry.versions():
        test = info.metrics.get("test", {})
        spearman, pairwise = test.get("spearman", float("nan")), test.get("pairwise_accuracy", float("nan"))
        figures = f"spearman {spearman:.3f}  pairwise {pairwise:.3f}"
        typer.echo(f"{'*' if info.active else ' '} {info.version:<32} {figures}  {info.created}")


@models_app.command("activate")
def models_activate(version: str, data_dir: DataDir = Path("var")) -> None:
    """Serve VERSION from now on (a running service picks it up through the API's activate route)."""
    from model.registry import Registry

    Registry(data_dir / "models").activate(version)
    typer.echo(f"active: {version}")


@models_app.command("prepare")
def models_prepare(
    version: Annotated[str | None, typer.Argument(help="a version in the registry (default: the active one)")] = None,
    engine: EngineOption = "onnx-int8",
    data: Annotated[
        Path | None, typer.Option(help="corpus folder whose test split checks parity (default: the bundled one)")
    ] = None,
    data_dir: DataDir = Path("var"),
) -> None:
    """Export, calibrate and parity-check VERSION's ONNX engine now, cached beside it, so that `score`, `compare` and
    a service restart open the prepared session instead of loading torch (the service does this itself on start)."""
    from model.contract import CORPUS_DIR
    from model.errors import UnknownVersion
    from model.prepare_engine import engine_request, prepare
    from model.registry import Registry

    if engine not in ("onnx-fp32", "onnx-int8"):
        raise typer.BadParameter(f"expected onnx-fp32 or onnx-int8; found {engine!r}", param_hint="--engine")
    registry = Registry(data_dir / "models")
    registry.seed()
    try:
        folder = registry.path(version) if version else registry.active_path()
    except UnknownVersion as error:
        raise typer.BadParameter(str(error), param_hint="VERSION") from error
    request = engine_request(engine, None, data or CORPUS_DIR)
    assert request is not None  # only torch has no request
    report = prepare(folder, request)
    typer.echo(f"{folder.name}: {json.dumps(report)}")


def _database(data_dir: Path) -> Any:
    """The service's database (DIPLOTONE_DATABASE_URL, else SQLite under the data directory), migrated."""
    from service.settings import Settings
    from service.store.db import Database

    return Database.open(Settings(data_dir=data_dir).sqlalchemy_url)


@keys_app.command("create")
def keys_create(
    scope: Annotated[
        str,
        typer.Option(
            help="score, read (stored messages and labels; also scores), label (also reads) or admin (everything)"
        ),
    ],
    name: Annotated[str, typer.Option(help="who or what the key is for")] = "unnamed",
    data_dir: DataDir = Path("var"),
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from service.keys import create_key

    database = _database(data_dir)
    try:
        with database.sessions() as session:
            issued = create_key(session, scope, name)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    finally:
        database.close()
    typer.echo(issued.token)
    typer.echo(
        f"key {issued.principal.key_id} ({issued.principal.scope}, {name!r}): store it now; it cannot be shown again",
        err=True,
    )


@keys_app.command("list")
def keys_list(data_dir: DataDir = Path("var")) -> None:
    """Every key by its prefix (dpt_<id>_…, never the secret): scope, active or revoked, created, name."""
    from service.keys import list_keys, shown

    database = _database(data_dir)
    with database.sessions() as session:
        for key in list_keys(session):
            revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            typer.echo(f"{shown(key.id)}  {key.scope:<6} {revoked:<24} {key.created_at:%Y-%m-%d %H:%M}  {key.name}")
    database.close()


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key's prefix as `keys list` shows it (dpt_<id>_…), or its id")],
    data_dir: DataDir = Path("var"),
) -> None:
    """Revoke a key (a running service may accept it for up to a minute more: it remembers verified keys)."""
    from service.keys import key_id_in, revoke_key, shown

    key_id = key_id_in(key)
    if key_id is None:
        raise typer.BadParameter(f"expected a key prefix dpt_<16 hex digits>_… or a key id; found {key[:24]!r}")
    database = _database(data_dir)
    with database.sessions() as session:
        revoked = revoke_key(session, key_id)
    database.close()
    if not revoked:
        raise typer.BadParameter(f"no active key {shown(key_id)}")
    typer.echo(f"revoked {shown(key_id)}")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = Path("var")) -> None:
    """Apply the database migrations (the service also does this when it starts)."""
    _database(data_dir).close()
    typer.echo("database schema is up to date")


# ----------------------------------------------------------------------------------------- timelines and pictures

SenderOption = Annotated[str, typer.Option("--sender", help="the relation's sender, as stored")]
RecipientOption = Annotated[str, typer.Option("--recipient", help="the relation's recipient, as stored")]
AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="judge absences up to this date, YYYY-MM-DD (default today)")
]


def _relation_timeline(sender: str, recipient: str, as_of: str | None, data_dir: Path) -> Any:
    """The stored relation's timeline, as ``GET /v1/timeline`` answers it."""
    import datetime as dt

    from service.routes.timeline import relation_timeline
    from service.store.repository import relation_messages

    try:
        day = dt.date.fromisoformat(as_of) if as_of else None
    except ValueError as error:
        raise typer.BadParameter(f"expected YYYY-MM-DD; found {as_of!r}", param_hint="--as-of") from error
    database = _database(data_dir)
    try:
        with database.sessions() as session:
            messages = relation_messages(session, sender, recipient)
            if not messages:
                raise typer.BadParameter(f"no stored message from {sender!r} to {recipient!r}")
            return relation_timeline(messages, sender, recipient, day)
    finally:
        database.close()


@app.command()
def timeline(
    sender: SenderOption,
    recipient: RecipientOption,
    as_of: AsOfOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole timeline as JSON")] = False,
    data_dir: DataDir = Path("var"),
) -> None:
    """A stored relation over time: each message's score, the moves beyond the interval, and the absences."""
    found = _relation_timeline(sender, recipient, as_of, data_dir)
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    for point in found.messages:
        day = point.date.isoformat() if point.date else "undated   "
        what = f"{point.score:5.1f} ({point.band})" if point.score is not None else "  —   unpublished"
        moved = f"  moved {point.change:+.1f}" if point.moved and point.change is not None else ""
        typer.echo(f"{day}  {what:<20} {point.occasion or '':<20} #{point.id}{moved}")
    cadence = found.cadence
    gap = f"usual gap {cadence.usual_gap_days:.0f} days" if cadence.usual_gap_days is not None else "no usual gap yet"
    occasions = ", ".join(f"{o.occasion} ({len(o.years)} years, ~{o.usual_date})" for o in cadence.occasions)
    typer.echo(f"cadence: {gap}; recurring: {occasions or 'none'}")
    for absence in found.absences:
        typer.echo(f"absence: {absence.detail}")


def _picture_format(output: Path) -> Any:
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise typer.BadParameter(f"expected a file ending .png or .svg; found {output.name!r}", param_hint="-o")
    return fmt


@plot_app.command("timeline")
def plot_timeline(
    sender: SenderOption,
    recipient: RecipientOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="the picture: .png or .svg")],
    as_of: AsOfOption = None,
    data_dir: DataDir = Path("var"),
) -> None:
    """Draw a stored relation: score and interval over time on the bands, moves and absences labelled."""
    fmt = _picture_format(output)
    from service.plots import timeline_figure, to_bytes

    found = _relation_timeline(sender, recipient, as_of, data_dir)
    output.write_bytes(to_bytes(timeline_figure(found), fmt))
    typer.echo(f"wrote {output} ({len(found.messages)} messages, {len(found.absences)} absences flagged)")


@plot_app.command("compare")
def plot_compare(
    file_a: Annotated[Path, typer.Argument(help="the earlier (or reference) message, as a text file")],
    file_b: Annotated[Path, typer.Argument(help="the later message, as a text file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the picture: .png or .svg")],
    model: ModelOption = None,
    engine: EngineOption = "onnx-int8",
    data_dir: DataDir = Path("var"),
) -> None:
    """Draw two messages: both scores with their intervals on the bands, and their marker counts."""
    fmt = _picture_format(output)
    text_a, text_b = _read_text(file_a), _read_text(file_b)
    from service.plots import compare_figure, to_bytes

    comparison = _scorer(model, data_dir, engine).compare(text_a, text_b)
    output.write_bytes(to_bytes(compare_figure(comparison, (file_a.stem, file_b.stem)), fmt))
    typer.echo(f"wrote {output} (delta {comparison.delta:+.1f}, P(B warmer) {comparison.p_b_warmer:.2f})")


# --- score-archive (issue 14): the logic lives in diplotone/archive.py and diplotone/archive_ray.py ---------------


@app.command("score-archive")
def score_archive(
    input: Annotated[Path, typer.Argument(help="an archive: .jsonl, .csv or .parquet (a file or a folder of parts)")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".jsonl, .csv or .parquet (a folder of parts)")],
    ray: Annotated[
        str | None, typer.Option("--ray", help="score on Ray Data: a cluster ADDRESS, or 'local' to start one here")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="with --ray: scoring actors, each with its own model")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (with --ray: per actor, CPUs reserved)")] = 1,
    batch: Annotated[
        int | None, typer.Option(min=1, help="messages per written batch, at most this lost in a crash [default: 256]")
    ] = None,
    model: ModelOption = None,
    data_dir: DataDir = Path("var"),
) -> None:
    """Score a whole archive: every row checked first, results appended batch by batch; a re-run resumes."""
    from diplotone.archive import BATCH, ArchiveError, survey_archive
    from diplotone.archive import score_archive as run_local

    try:
        survey = survey_archive(input, output)  # every row checked before the model is loaded
        typer.echo(f"{survey.rows} messages, {len(survey.done)} already in {output}", err=True)
        folder = _model_folder(model, data_dir)
        if ray is not None:
            from diplotone.archive_ray import score_on_ray
            from model.scorer import Scorer

            version = Scorer.from_pretrained(folder).version  # checks the manifest before a cluster is involved
            written = score_on_ray(survey, folder, version, ray, workers=workers, threads=threads, batch=batch or BATCH)
        else:
            import torch
            from tqdm import tqdm

            torch.set_num_threads(threads)
            scorer = _scorer(folder, data_dir)
            with tqdm(total=survey.remaining, unit="msg", disable=None, file=sys.stderr) as bar:
                written = run_local(scorer, survey, batch=batch or BATCH, progress=bar.update)
    except ArchiveError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"wrote {written} results to {output}", err=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="processes, each with its own model and batcher")] = 1,
) -> None:
    """Serve the HTTP API (settings from DIPLOTONE_* variables; OpenAPI at /docs)."""
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers)


def _print_result(result: Any) -> None:
    low, high = result.interval
    typer.echo(f"{result.score:.1f} ({result.band}), 90% interval {low:.1f}–{high:.1f}  [{result.model_version}]")
    if result.unusual:
        typer.echo(f"  unlike the training messages (distance {result.distance:.3f}): the interval is wider")
    for sentence in sorted(result.sentences, key=lambda s: -abs(s.contribution))[:5]:
        typer.echo(f"  {sentence.contribution:+6.1f}  {sentence.text[:100]}")
    kinds: dict[str, list[str]] = {}
    for marker in result.markers:
        kinds.setdefault(marker.kind, []).append(marker.text)
    for kind, texts in kinds.items():
        typer.echo(f"  {kind}: {', '.join(texts[:8])}{' …' if len(texts) > 8 else ''}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}") from error


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = (sys.stdin.read() if str(path) == "-" else _read_text(path)).splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise typer.BadParameter(f"{path} line {number}: expected a JSON object; {error.msg}") from error
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            expected = '{"id": ..., "text": "..."}'
            raise typer.BadParameter(f"{path} line {number}: expected {expected}; found {line[:80]!r}")
        records.append(record)
    return records


@contextmanager
def _open_out(path: Path) -> Iterator[TextIO]:
    if str(path) == "-":
        yield sys.stdout
        return
    with path.open("w") as handle:
        yield handle


if __name__ == "__main__":
    app()
