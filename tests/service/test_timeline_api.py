"""Unpublished messages, a relation's cadence and absences, the relations list and the SVG chart, over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.migrations import upgrade
from service.store.db import make_engine
from tests.service.store_helpers import TEXTS, assert_problem, bearer, issue_key, store

RELATION = {"sender": "Kim Jong Un", "recipient": "Xi Jinping"}
AS_OF = "2026-01-15"


@pytest.fixture
def label_key(client: TestClient) -> str:
    return issue_key(client, "label")


def _store_all(client: TestClient, token: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = client.post("/v1/messages", json={"messages": messages}, headers=bearer(token))
    assert response.status_code == 201, response.text
    stored: list[dict[str, Any]] = response.json()["messages"]
    return stored


def _national_days(years: list[int], unpublished: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [
        {
            "text": None if year in unpublished else TEXTS[year % len(TEXTS)],
            **RELATION,
            "date": f"{year}-09-09",
            "occasion": "national_day",
        }
        for year in years
    ]


def _store_unpublished(client: TestClient, token: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/messages", json={"text": None, **RELATION, **fields}, headers=bearer(token))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_unpublished_message_is_stored_unscored(client: TestClient, label_key: str) -> None:
    body = _store_unpublished(client, label_key, date="2024-09-09", occasion="national_day")

    again = client.get(f"/v1/messages/{body['id']}").json()

    assert again["published"] is False
    assert [again[k] for k in ("text", "score", "band", "interval", "model_version")] == [None] * 5
    assert (again["date"], again["occasion"]) == ("2024-09-09", "national_day")


def test_unpublished_message_without_a_date_is_422_naming_what_is_missing(client: TestClient, label_key: str) -> None:
    response = client.post("/v1/messages", json={"text": None, "sender": "A"}, headers=bearer(label_key))

    detail = assert_problem(response, 422, "invalid-request")["detail"]
    assert "expected sender, recipient and date; found no recipient, date" in detail


def test_labelling_an_unpublished_message_is_409(client: TestClient, label_key: str) -> None:
    body = _store_unpublished(client, label_key, date="2024-09-09")

    response = client.put(
        f"/v1/messages/{body['id']}/label", json={"annotator": "ana", "score": 50}, headers=bearer(label_key)
    )

    problem = assert_problem(response, 409, "message-unpublished")
    assert (
        problem["detail"]
        == f"message {body['id']} is known but unpublished (no text); expected a message with text to label"
    )


def test_timeline_flags_the_missing_year_and_shows_the_unpublished_one(client: TestClient, label_key: str) -> None:
    years = [2018, 2019, 2020, 2021, 2022, 2023, 2025]  # no national day message in 2024
    stored = _store_all(client, label_key, _national_days(years, unpublished=(2021,)))

    body = client.get("/v1/timeline", params={**RELATION, "as_of": AS_OF}).json()

    points = body["messages"]
    assert [p["id"] for p in points] == [m["id"] for m in stored]
    unpublished = points[3]
    assert (unpublished["published"], unpublished["score"], unpublished["moved"]) == (False, None, False)
    scored = [p for p in points if p["published"]]
    assert scored[3]["change"] == pytest.approx(scored[3]["score"] - scored[2]["score"], abs=1e-3)  # 2022 vs 2020
    assert all(p["percentile"] is not None for p in scored)
    assert body["cadence"]["occasions"] == [
        {"occasion": "national_day", "years": years, "usual_date": "09-09"}  # the unpublished 2021 counts
    ]
    assert [(a["kind"], a["year"], a["detail"]) for a in body["absences"]] == [
        ("expected_occasion", 2024, "no national_day message in 2024 after 6 years in a row")
    ]
    assert body["as_of"] == AS_OF


def test_timeline_of_a_short_relation_expects_nothing(client: TestClient, label_key: str) -> None:
    _store_all(client, label_key, _national_days([2023, 2024]))

    body = client.get("/v1/timeline", params={**RELATION, "as_of": "2026-12-31"}).json()

    assert body["absences"] == []
    assert body["cadence"] == {"usual_gap_days": None, "gaps": 1, "occasions": []}


def test_relations_lists_each_pair_with_its_span_busiest_first(client: TestClient, label_key: str) -> None:
    _store_all(client, label_key, _national_days([2022, 2023]))
    store(client, label_key, TEXTS[0], sender="Kim Jong Un", recipient="Vladimir Putin", date="2024-06-12")
    store(client, label_key, TEXTS[1])  # no sender or recipient: no relation

    response = client.get("/v1/relations")

    assert response.status_code == 200
    assert response.json()["relations"] == [
        {**RELATION, "messages": 2, "first": "2022-09-09", "last": "2023-09-09"},
        {
            "sender": "Kim Jong Un",
            "recipient": "Vladimir Putin",
            "messages": 1,
            "first": "2024-06-12",
            "last": "2024-06-12",
        },
    ]


def test_timeline_svg_draws_the_relation_with_its_absence_labelled(client: TestClient, label_key: str) -> None:
    _store_all(client, label_key, _national_days([2018, 2019, 2020, 2021, 2022, 2023, 2025], unpublished=(2021,)))

    response = client.get("/v1/timeline.svg", params={**RELATION, "as_of": AS_OF})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    root = ElementTree.fromstring(response.content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    drawn = " ".join(response.text.split())
    for words in ("no national_day 2024", "unpublished", "Kim Jong Un → Xi Jinping", "6 scored, 1 unpublished"):
        assert words in drawn


def test_timeline_svg_of_an_unknown_relation_is_an_empty_chart_not_an_error(client: TestClient) -> None:
    response = client.get("/v1/timeline.svg", params={"sender": "Nobody", "recipient": "No one"})

    assert response.status_code == 200
    assert "no dated messages" in response.text


def test_migration_0002_keeps_every_stored_message_and_downgrade_refuses_to_drop_unpublished(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO messages (text, sender, recipient, date, occasion, language, score, interval_low, "
                "interval_high, model_version, created_at) VALUES ('Dear friend.', 'A', 'B', '2020-01-01', "
                "'national_day', 'en', 71.5, 60.0, 80.0, 'v1', '2026-01-01 00:00:00')"
            )
        )
    upgrade(engine)
    with engine.begin() as connection:
        kept = connection.execute(text("SELECT id, text, score, interval_low, model_version FROM messages")).all()
        connection.execute(
            text(
                "INSERT INTO messages (sender, recipient, date, language, created_at) VALUES ('A', 'B', '2021-01-01', "
                "'en', '2026-01-01 00:00:00')"
            )
        )
        half_scored = "INSERT INTO messages (text, language, created_at) VALUES ('x', 'en', '2026-01-01 00:00:00')"
        with pytest.raises(Exception, match="CHECK constraint failed"):
            connection.execute(text(half_scored))
    with pytest.raises(RuntimeError, match="1 unpublished messages"):
        upgrade_down(engine)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM messages")).scalar_one()
    engine.dispose()
    assert kept == [(1, "Dear friend.", 71.5, 60.0, "v1")]
    assert count == 2


def upgrade_down(engine: Any) -> None:
    from alembic import command

    from service.migrations import alembic_config

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
