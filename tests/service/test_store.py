"""The store without HTTP: migrations, SQLite settings, labels, timestamps, keys and the training snapshot."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from model import ScoreResult
from service.keys import KeyVerifier, authenticate, create_key, key_id_of, revoke_key, scope_allows
from service.migrations import alembic_config
from service.store.db import Database
from service.store.models import ApiKey, Base, Label, Message, TrainingRun
from service.store.repository import MessageFields, add_messages, add_pair, put_label
from service.store.snapshot import write_snapshot
from tests.postgres import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here that touches the store runs on SQLite and on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database.open(database_url)
    yield database
    database.close()


def _result(score: float, version: str = "tiny-0001") -> ScoreResult:
    return ScoreResult(score, "warm", (score - 10, score + 10), [], [], version)


def _store(database: Database, *texts: str) -> list[int]:
    with database.sessions() as session:
        rows = add_messages(
            session,
            [MessageFields(t, "A", "B", dt.date(2020, 1, 1 + i)) for i, t in enumerate(texts)],
            [_result(50.0 + i) for i in range(len(texts))],
        )
        return [row.id for row in rows]


def test_upgrade_creates_the_schema_of_the_models(database: Database) -> None:
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_open_twice_keeps_data_and_schema_version(database_url: str) -> None:
    first = Database.open(database_url)
    ids = _store(first, "Dear friend.")
    first.close()
    second = Database.open(database_url)
    with second.engine.connect() as connection:
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    with second.sessions() as session:
        texts = list(session.scalars(select(Message.text)))
    second.close()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert texts == ["Dear friend."]
    assert ids == [1]


def test_open_sqlite_sets_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    database = Database.open(f"sqlite:///{tmp_path / 'store.db'}")
    with database.engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()
            for name in ("journal_mode", "busy_timeout", "foreign_keys")
        }
    database.close()
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 30_000, "foreign_keys": 1}


def test_timestamps_read_back_timezone_aware_utc(database: Database) -> None:
    [message_id] = _store(database, "Dear friend.")
    with database.sessions() as session:
        label = put_label(session, message_id, "ann", 70.0)
    with database.sessions() as session:
        again = session.get(Label, label.id)
    assert again is not None
    assert again.labelled_at.tzinfo == dt.UTC
    assert abs(again.labelled_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


def test_put_label_replaces_the_annotators_earlier_score(database: Database) -> None:
    [message_id] = _store(database, "Dear friend.")
    with database.sessions() as session:
        first = put_label(session, message_id, "ann", 70.0)
        put_label(session, message_id, "other", 30.0)
        second = put_label(session, message_id, "ann", 90.0)
    with database.sessions() as session:
        labels = sorted((label.annotator, label.score) for label in session.scalars(select(Label)))
    assert second.id == first.id
    assert labels == [("ann", 90.0), ("other", 30.0)]


def test_one_running_training_run_is_enforced_by_the_database(database: Database) -> None:
    with database.sessions() as session:
        session.add(TrainingRun(status="running"))
        session.commit()
        session.add(TrainingRun(status="failed"))
        session.commit()
        session.add(TrainingRun(status="running"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_create_key_stores_only_a_hash_and_authenticates(database: Database) -> None:
    with database.sessions() as session:
        issued = create_key(session, "label", "annotation tool")
    with database.sessions() as session:
        row = session.get(ApiKey, issued.principal.key_id)
        principal = authenticate(session, issued.token)
    secret = issued.token[len("dpt_") + 16 + 1 :]
    assert row is not None
    assert secret not in row.secret_hash
    assert row.secret_hash.startswith("$argon2id$")
    assert principal is not None
    assert (principal.name, principal.scope) == ("annotation tool", "label")
    assert key_id_of(issued.token) == issued.principal.key_id


def test_authenticate_refuses_wrong_secret_malformed_and_revoked_keys(database: Database) -> None:
    with database.sessions() as session:
        issued = create_key(session, "admin", "ops")
    key_id = issued.principal.key_id
    forged = f"dpt_{key_id}_{'A' * 43}"
    with database.sessions() as session:
        refused = [authenticate(session, token) for token in (forged, "dpt_nothex_x", "", issued.token + "x")]
        assert revoke_key(session, key_id) is True
        after_revocation = authenticate(session, issued.token)
        assert revoke_key(session, key_id) is False
    assert refused == [None, None, None, None]
    assert after_revocation is None


def test_create_key_refuses_an_unknown_scope(database: Database) -> None:
    with (
        database.sessions() as session,
        pytest.raises(ValueError, match="scope must be one of score, read, label, admin"),
    ):
        create_key(session, "root", "x")


def test_scopes_are_ordered_score_label_admin() -> None:
    allowed = {
        (granted, required)
        for granted in ("score", "label", "admin")
        for required in ("score", "label", "admin")
        if scope_allows(granted, required)
    }
    assert allowed == {
        ("score", "score"),
        ("label", "score"),
        ("label", "label"),
        ("admin", "score"),
        ("admin", "label"),
        ("admin", "admin"),
    }


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    bundled = [
        {
            "id": "b1",
            "text": "Dear friend.",
            "sender": "X",
            "recipient": "Y",
            "date": "2019-01-01",
            "occasion": "day",
            "language": "en",
            "score": 70.0,
            "split": "train",
            "group": "b1",
        },
        {
            "id": "b2",
            "text": "We firmly reject the statement.",
            "sender": "X",
            "recipient": "Y",
            "date": "2019-01-02",
            "occasion": "day",
            "language": "en",
            "score": 5.0,
            "split": "test",
            "group": "b2",
        },
    ]
    (folder / "messages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bundled))
    (folder / "pairs.jsonl").write_text(json.dumps({"warmer": "b1", "cooler": "b2", "kind": "variant"}) + "\n")
    return folder


def test_write_snapshot_joins_bundled_corpus_and_labelled_messages(database: Database, tmp_path: Path) -> None:
    a, b, c, unlabelled, in_test = _store(
        database, "Warmest wishes.", "Best regards.", "Greetings.", "Hello.", "We  firmly reject the statement."
    )
    with database.sessions() as session:
        for message_id, scores in ((a, (80.0, 90.0)), (b, (40.0,)), (c, (20.0,)), (in_test, (5.0,))):
            for number, score in enumerate(scores):
                put_label(session, message_id, f"ann-{number}", score)
        add_pair(session, a, b, "variant", "ann-0", None)
        add_pair(session, b, a, "variant", "ann-1", None)  # a tie between annotators: no consensus
        add_pair(session, b, c, "year-over-year", "ann-0", None)
        add_pair(session, a, unlabelled, "variant", "ann-0", None)  # unlabelled: not in the snapshot
        snapshot = write_snapshot(session, _corpus(tmp_path / "corpus"), tmp_path / "snapshots" / "run-1.json")

    payload = json.loads(snapshot.path.read_bytes())
    stored = {m["id"]: m for m in payload["messages"] if m["id"].startswith("stored-")}
    assert snapshot.sha256 == hashlib.sha256(snapshot.path.read_bytes()).hexdigest()
    assert [m["id"] for m in payload["messages"][:2]] == ["b1", "b2"]
    assert sorted(stored) == [f"stored-{a}", f"stored-{b}", f"stored-{c}"]
    assert stored[f"stored-{a}"]["score"] == 85.0
    assert all("split" not in m for m in stored.values())  # the trainer assigns train or validation, never test
    assert len({m["group"] for m in stored.values()}) == 1  # joined by pairs: one group, one split
    assert payload["pairs"] == [
        {"warmer": "b1", "cooler": "b2", "kind": "variant"},
        {"warmer": f"stored-{b}", "cooler": f"stored-{c}", "kind": "year-over-year", "votes": 1},
    ]
    assert snapshot.counts == {
        "messages": 5,
        "pairs": 2,
        "bundled_messages": 2,
        "stored_labelled": 3,
        "stored_pairs": 1,
        "stored_in_test_skipped": 1,
    }


def test_key_verifier_remembers_a_verified_key_for_its_ttl(database: Database) -> None:
    with database.sessions() as session:
        issued = create_key(session, "label", "tool")
    remembering, forgetful = KeyVerifier(ttl_s=60), KeyVerifier(ttl_s=0)
    with database.sessions() as session:
        assert remembering.verify(session, issued.token) == issued.principal
        assert forgetful.verify(session, issued.token) == issued.principal
        revoke_key(session, issued.principal.key_id)
        # Within its ttl the first still accepts the key without asking the database; the second asks and refuses.
        assert remembering.verify(session, issued.token) == issued.principal
        assert forgetful.verify(session, issued.token) is None


def test_snapshot_is_read_by_the_trainer_with_stored_messages_kept_out_of_test(
    database: Database, tmp_path: Path
) -> None:
    from training.corpus import load_snapshot  # the contract between the two sides; the service never imports it

    ids = _store(database, *(f"Dear friend number {n}." for n in range(30)))
    with database.sessions() as session:
        for message_id in ids:
            put_label(session, message_id, "ann", 60.0)
        snapshot = write_snapshot(session, _corpus(tmp_path / "corpus"), tmp_path / "run-1.json")

    corpus = load_snapshot(snapshot.path)

    splits = dict(zip(corpus.messages["id"], corpus.messages["split"], strict=True))
    assert len(splits) == 32
    assert {splits[f"stored-{i}"] for i in ids} == {"train", "validation", "user_test"}  # never the corpus test split
    assert [i for i, split in splits.items() if split == "test"] == ["b2"]
    assert corpus.sha256 == snapshot.sha256
