"""The diplotone command on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diplotone.cli import app
from model.registry import Registry

runner = CliRunner()
WARM = "Dear friend, please accept my warmest congratulations. Our friendship is eternal."
COOLER = "Dear friend, please accept my congratulations."


def test_score_text_prints_a_readable_result(tiny_version: Path) -> None:
    result = runner.invoke(app, ["score", WARM, "--model", str(tiny_version)])
    assert result.exit_code == 0, result.output
    assert "90% interval" in result.output and "[tiny-0001]" in result.output
    assert "superlative: warmest, eternal" in result.output


def test_score_file_writes_one_result_per_line_with_ids(tiny_version: Path, tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": f"m{i}", "text": t}) + "\n" for i, t in enumerate([WARM, COOLER])))
    result = runner.invoke(
        app, ["score", "--input", str(source), "--output", str(target), "--model", str(tiny_version)]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["m0", "m1"]
    fields = {"id", "score", "band", "interval", "sentences", "markers", "model_version", "unusual", "distance"}
    assert set(lines[0]) == fields


def test_score_file_with_a_bad_line_names_it(tiny_version: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": WARM}) + "\n" + '{"id": "b", "txt": "oops"}\n')
    result = runner.invoke(app, ["score", "--input", str(source), "--model", str(tiny_version)])
    assert result.exit_code == 2
    assert "line 2: expected" in _plain(result.output)


def test_score_without_text_or_input_is_refused(tiny_version: Path) -> None:
    result = runner.invoke(app, ["score", "--model", str(tiny_version)])
    assert result.exit_code == 2
    assert "give either a TEXT or --input FILE" in _plain(result.output)


def test_compare_prints_the_dropped_sentence(tiny_version: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(WARM)
    (tmp_path / "b.txt").write_text(COOLER)
    result = runner.invoke(
        app, ["compare", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--model", str(tiny_version)]
    )
    assert result.exit_code == 0, result.output
    assert 'did not appear this time: "Our friendship is eternal."' in result.output


@pytest.mark.parametrize("command", [["models", "list"]])
def test_models_list_marks_the_active_version(command: list[str], tiny_version: Path, tmp_path: Path) -> None:
    Registry(tmp_path / "models").install(tiny_version, "tiny-0001")
    Registry(tmp_path / "models").activate("tiny-0001")
    result = runner.invoke(app, [*command, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("* tiny-0001")


def test_models_activate_unknown_version_fails_clearly(tiny_version: Path, tmp_path: Path) -> None:
    Registry(tmp_path / "models").install(tiny_version, "tiny-0001")
    result = runner.invoke(app, ["models", "activate", "nope", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "no model version 'nope'" in str(result.exception) + result.output


def test_models_prepare_caches_the_engine_that_score_then_opens(tiny_version: Path, tmp_path: Path) -> None:
    from model.scorer import Scorer
    from tests.factories import write_tiny_corpus

    corpus = write_tiny_corpus(tmp_path / "corpus")
    Registry(tmp_path / "models").install(tiny_version, "tiny-0001")
    Registry(tmp_path / "models").activate("tiny-0001")
    folder = tmp_path / "models" / "tiny-0001"
    assert Scorer.from_prepared(folder, engine="onnx-fp32") is None
    args = ["--engine", "onnx-fp32", "--data-dir", str(tmp_path)]
    result = runner.invoke(app, ["models", "prepare", *args, "--data", str(corpus)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("tiny-0001: ") and '"engine": "onnx-fp32"' in result.output
    assert Scorer.from_prepared(folder, engine="onnx-fp32") is not None
    scored = runner.invoke(app, ["score", WARM, *args])
    assert scored.exit_code == 0 and "[tiny-0001]" in scored.output, scored.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "torch"], "expected onnx-fp32 or onnx-int8; found 'torch'"),
        (["nope"], "no model version 'nope'"),
    ],
)
def test_models_prepare_refuses_what_it_cannot_prepare(
    args: list[str], expected: str, tiny_version: Path, tmp_path: Path
) -> None:
    Registry(tmp_path / "models").install(tiny_version, "tiny-0001")
    result = runner.invoke(app, ["models", "prepare", *args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and expected in _plain(result.output), result.output


def test_score_with_an_unknown_engine_names_the_known_ones(tiny_version: Path) -> None:
    result = runner.invoke(app, ["score", WARM, "--model", str(tiny_version), "--engine", "gpu"])
    assert result.exit_code == 2 and "expected one of torch, onnx-fp32, onnx-int8; found 'gpu'" in _plain(result.output)


def _plain(output: str) -> str:
    """The output without the frame and line breaks that rich draws around an error."""
    return " ".join(output.replace("│", " ").split())


def test_evaluate_prints_the_test_figures_with_subtle_pairs(tiny_version: Path, tmp_path: Path) -> None:
    from tests.factories import write_tiny_corpus

    corpus = write_tiny_corpus(tmp_path / "corpus")
    figures = tmp_path / "figures.json"
    result = runner.invoke(
        app,
        ["evaluate", "--data", str(corpus), "--model", str(tiny_version), "--no-baselines", "--json", str(figures)],
    )
    assert result.exit_code == 0, result.output
    test = json.loads(figures.read_text())["scorers"]["diplotone tiny-0001"]["test"]
    assert f"test split: {int(test['n'])} messages, {int(test['pairs'])} judged pairs" in result.output
    assert "subtle" in result.output and f"{test['subtle_pairwise_accuracy']:.3f}" in result.output


def test_evaluate_on_one_part_of_the_test_split(tiny_version: Path, tmp_path: Path) -> None:
    from tests.factories import write_tiny_corpus
    from training.corpus import load_corpus

    corpus = write_tiny_corpus(tmp_path / "corpus")
    test_ids = list(load_corpus(corpus).split("test")["id"])
    prefix = test_ids[0][:3]
    args = ["evaluate", "--data", str(corpus), "--model", str(tiny_version), "--no-baselines"]
    result = runner.invoke(app, [*args, "--test-ids", prefix])
    assert result.exit_code == 0, result.output
    assert f"test split: {sum(i.startswith(prefix) for i in test_ids)} messages" in result.output
    refused = runner.invoke(app, [*args, "--test-ids", "nope-"])
    assert refused.exit_code == 2 and "no test message has an id starting with 'nope-'" in _plain(refused.output)


def test_models_activate_switches_the_active_version(tiny_base: Path, tiny_version: Path, tmp_path: Path) -> None:
    from tests.factories import make_tiny_version

    registry = Registry(tmp_path / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.install(make_tiny_version(tiny_base, tmp_path / "b", version="tiny-0002"), "tiny-0002")
    registry.activate("tiny-0001")
    result = runner.invoke(app, ["models", "activate", "tiny-0002", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == "active: tiny-0002\n"
    assert registry.active_version() == "tiny-0002"


def test_db_upgrade_creates_the_schema_at_the_latest_migration(tmp_path: Path) -> None:
    import sqlite3

    result = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == "database schema is up to date\n"
    with sqlite3.connect(tmp_path / "diplotone.db") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        [(revision,)] = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert tables == {"alembic_version", "api_keys", "messages", "labels", "pairs", "training_runs"}
    from alembic.script import ScriptDirectory

    from service.migrations import alembic_config

    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()
    again = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])  # idempotent
    assert again.exit_code == 0, again.output


def test_keys_create_list_and_revoke(tmp_path: Path) -> None:
    from service.keys import authenticate, key_id_of
    from service.settings import Settings
    from service.store.db import Database

    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--scope", "label", "--name", "analyst", *data])
    assert created.exit_code == 0, created.output
    [token] = created.stdout.splitlines()  # the token alone on stdout, for scripts; the note goes to stderr
    key_id = key_id_of(token)
    assert f"key {key_id} (label, 'analyst'): store it now" in created.stderr
    database = Database.open(Settings(data_dir=tmp_path).sqlalchemy_url)
    try:
        with database.sessions() as session:
            principal = authenticate(session, token)
        assert principal is not None and (principal.key_id, principal.scope) == (key_id, "label")

        listed = runner.invoke(app, ["keys", "list", *data])
        assert listed.exit_code == 0, listed.output
        [line] = listed.stdout.splitlines()
        assert line.startswith(f"dpt_{key_id}_…  label  active ") and line.endswith("  analyst")

        revoked = runner.invoke(app, ["keys", "revoke", key_id, *data])
        assert (revoked.exit_code, revoked.stdout) == (0, f"revoked dpt_{key_id}_…\n")
        with database.sessions() as session:
            assert authenticate(session, token) is None
        assert " revoked " in runner.invoke(app, ["keys", "list", *data]).stdout
    finally:
        database.close()
    again = runner.invoke(app, ["keys", "revoke", key_id, *data])
    assert again.exit_code == 2 and f"no active key dpt_{key_id}_…" in _plain(again.output)


def test_keys_create_refuses_an_unknown_scope(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--scope", "root", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "root" in _plain(result.output) and "admin" in _plain(result.output)


def test_train_full_fine_tuning_takes_its_own_learning_rate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import training.pipeline
    from training.args import FULL_LEARNING_RATE, TrainArgs

    seen: list[TrainArgs] = []

    def refuse(args: TrainArgs, *_: object, **__: object) -> None:
        seen.append(args)
        raise SystemExit(0)  # stop before training: only the arguments are under test

    monkeypatch.setattr(training.pipeline, "retrain", refuse)
    result = runner.invoke(app, ["train", "--mode", "full", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (seen[0].mode, seen[0].learning_rate) == ("full", FULL_LEARNING_RATE)


def test_train_refuses_an_unknown_mode_naming_the_choices(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--mode", "half", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "'half' is not one of 'lora', 'full'" in _plain(result.output)
