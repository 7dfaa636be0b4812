"""Messages, labels, pairs and the timeline through HTTP, on the tiny model and a temporary SQLite store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.app import create_app
from service.routes.timeline import build_timeline
from service.settings import Settings
from service.store.models import Label, Message
from tests.postgres import BACKENDS
from tests.service.store_helpers import TEXTS, assert_problem, bearer, database_of, issue_key, store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here that touches the store runs on SQLite and on PostgreSQL."""
    return str(request.param)


RELATION = {"sender": "Kim Jong Un", "recipient": "Vladimir Putin"}


@pytest.fixture
def label_key(client: TestClient) -> str:
    return issue_key(client, "label")


# ----------------------------------------------------------------------------------------------------------- create


def test_create_message_stores_the_serving_models_score_and_version(client: TestClient, label_key: str) -> None:
    scored = client.post("/v1/score", json={"text": TEXTS[0]}).json()

    response = client.post(
        "/v1/messages",
        json={"text": TEXTS[0], **RELATION, "date": "2026-06-12", "occasion": "Russia Day"},
        headers=bearer(label_key),
    )

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"].endswith(f"/v1/messages/{body['id']}")
    assert body["score"] == pytest.approx(scored["score"], abs=1e-3)
    assert body["interval"] == pytest.approx(scored["interval"], abs=1e-3)
    assert (body["band"], body["model_version"]) == (scored["band"], "tiny-0001")
    assert (body["sender"], body["date"], body["occasion"]) == ("Kim Jong Un", "2026-06-12", "Russia Day")
    assert (body["label"], body["labels"]) == (None, [])
    assert client.get(f"/v1/messages/{body['id']}").json() == body


def test_create_messages_batch_stores_all_in_order(client: TestClient, label_key: str) -> None:
    items = [{"text": text, **RELATION} for text in TEXTS * 20]  # 80: more than one scoring chunk of max_texts

    response = client.post("/v1/messages", json={"messages": items}, headers=bearer(label_key))

    assert response.status_code == 201
    stored = response.json()["messages"]
    assert [m["text"] for m in stored] == [item["text"] for item in items]
    assert [m["id"] for m in stored] == list(range(1, 81))
    scores = {m["text"]: m["score"] for m in stored[:4]}
    assert all(m["score"] == pytest.approx(scores[m["text"]], abs=1e-3) for m in stored)  # same text, same score


def test_create_messages_over_the_batch_limit_is_422_and_stores_nothing(client: TestClient, label_key: str) -> None:
    response = client.post(
        "/v1/messages", json={"messages": [{"text": "Dear friend."}] * 1001}, headers=bearer(label_key)
    )

    body = assert_problem(response, 422, "invalid-request")
    assert "at most 1000 items" in body["detail"]
    assert client.get("/v1/messages").json() == {"messages": [], "next_after": None}


def test_create_message_text_too_long_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_chars=50)
    token = issue_key(client, "label")

    response = client.post(
        "/v1/messages", json={"messages": [{"text": "Dear friend."}, {"text": "word " * 20}]}, headers=bearer(token)
    )

    body = assert_problem(response, 413, "text-too-long")
    assert body["detail"] == "messages[1].text has 100 characters; the limit is 50"
    assert client.get("/v1/messages").json()["messages"] == []


def test_create_message_blank_text_or_unknown_field_is_422(client: TestClient, label_key: str) -> None:
    blank = client.post("/v1/messages", json={"text": "   "}, headers=bearer(label_key))
    misspelt = client.post("/v1/messages", json={"text": "Dear friend.", "sendr": "X"}, headers=bearer(label_key))

    assert "text must contain words; found only whitespace" in assert_problem(blank, 422, "invalid-request")["detail"]
    assert assert_problem(misspelt, 422, "invalid-request")["errors"][0]["field"] == "body.one.sendr"


# ------------------------------------------------------------------------------------------------------ list and get


def test_list_messages_filters_by_relation_dates_and_labelled(client: TestClient, label_key: str) -> None:
    first = store(client, label_key, TEXTS[0], **RELATION, date="2024-06-12")
    second = store(client, label_key, TEXTS[1], **RELATION, date="2025-06-12")
    store(client, label_key, TEXTS[2], sender="Someone else", recipient="Vladimir Putin", date="2025-06-12")
    client.put(f"/v1/messages/{second['id']}/label", json={"annotator": "a", "score": 40}, headers=bearer(label_key))

    def ids(**params: Any) -> list[int]:
        response = client.get("/v1/messages", params=params)
        assert response.status_code == 200
        return [m["id"] for m in response.json()["messages"]]

    assert ids(sender="Kim Jong Un") == [first["id"], second["id"]]
    assert ids(recipient="Vladimir Putin", date_from="2025-01-01") == [second["id"], second["id"] + 1]
    assert ids(sender="Kim Jong Un", date_to="2024-12-31") == [first["id"]]
    assert ids(labelled=True) == [second["id"]]
    assert ids(labelled=False, sender="Kim Jong Un") == [first["id"]]


def test_list_messages_pages_by_next_after(client: TestClient, label_key: str) -> None:
    client.post("/v1/messages", json={"messages": [{"text": t} for t in TEXTS + TEXTS[:1]]}, headers=bearer(label_key))

    pages, after = [], None
    while True:
        body = client.get("/v1/messages", params={"limit": 2, **({"after": after} if after else {})}).json()
        pages.append([m["id"] for m in body["messages"]])
        after = body["next_after"]
        if after is None:
            break

    assert pages == [[1, 2], [3, 4], [5]]


def test_get_unknown_message_is_404(client: TestClient) -> None:
    response = client.get("/v1/messages/999")

    body = assert_problem(response, 404, "message-not-found")
    assert body["detail"] == "id 999 names no stored message"


def test_list_messages_with_a_bad_date_is_422(client: TestClient) -> None:
    response = client.get("/v1/messages", params={"date_from": "12/06/2025"})

    assert assert_problem(response, 422, "invalid-request")["errors"][0]["field"] == "query.date_from"


# ----------------------------------------------------------------------------------------------------------- labels


def test_label_message_replaces_the_annotators_earlier_score(client: TestClient, label_key: str) -> None:
    message = store(client, label_key)
    url = f"/v1/messages/{message['id']}/label"

    client.put(url, json={"annotator": "ana", "score": 60}, headers=bearer(label_key))
    client.put(url, json={"annotator": "ben", "score": 90}, headers=bearer(label_key))
    response = client.put(url, json={"annotator": "ana", "score": 70}, headers=bearer(label_key))

    assert response.status_code == 200
    body = response.json()
    assert (body["message_id"], body["annotator"], body["score"], body["label"], body["annotators"]) == (
        message["id"],
        "ana",
        70.0,
        80.0,
        2,
    )
    stored = client.get(f"/v1/messages/{message['id']}").json()
    assert [(label["annotator"], label["score"]) for label in stored["labels"]] == [("ana", 70.0), ("ben", 90.0)]
    assert stored["label"] == 80.0


def test_label_message_score_out_of_range_is_422(client: TestClient, label_key: str) -> None:
    message = store(client, label_key)

    response = client.put(
        f"/v1/messages/{message['id']}/label", json={"annotator": "ana", "score": 101}, headers=bearer(label_key)
    )

    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"][0]["field"] == "body.score"
    assert "less than or equal to 100" in body["detail"]


def test_label_unknown_message_is_404(client: TestClient, label_key: str) -> None:
    response = client.put("/v1/messages/42/label", json={"annotator": "ana", "score": 50}, headers=bearer(label_key))

    assert assert_problem(response, 404, "message-not-found")["message_id"] == 42


def test_concurrent_label_writes_lose_none(client: TestClient, label_key: str) -> None:
    messages = client.post(
        "/v1/messages", json={"messages": [{"text": t} for t in TEXTS]}, headers=bearer(label_key)
    ).json()["messages"]
    writes = [(messages[i % 4]["id"], f"annotator-{i}", float(i % 101)) for i in range(200)]

    def put(write: tuple[int, str, float]) -> int:
        message_id, annotator, score = write
        return client.put(
            f"/v1/messages/{message_id}/label", json={"annotator": annotator, "score": score}, headers=bearer(label_key)
        ).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(put, writes))

    assert statuses == [200] * 200
    with database_of(client).sessions() as session:
        stored = {tuple(row) for row in session.execute(select(Label.message_id, Label.annotator, Label.score))}
    assert stored == set(writes)


def test_concurrent_relabels_by_one_annotator_keep_one_label(client: TestClient, label_key: str) -> None:
    message = store(client, label_key)

    def put(score: int) -> int:
        return client.put(
            f"/v1/messages/{message['id']}/label", json={"annotator": "ana", "score": score}, headers=bearer(label_key)
        ).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(put, range(40)))

    assert statuses == [200] * 40
    labels = client.get(f"/v1/messages/{message['id']}").json()["labels"]
    assert len(labels) == 1
    assert labels[0]["score"] in range(40)


# ------------------------------------------------------------------------------------------------------------ pairs


def test_create_pair_records_the_judgement(client: TestClient, label_key: str) -> None:
    warmer, cooler = store(client, label_key, TEXTS[2]), store(client, label_key, TEXTS[1])

    response = client.post(
        "/v1/pairs",
        json={
            "warmer": warmer["id"],
            "cooler": cooler["id"],
            "kind": "variant",
            "annotator": "ana",
            "note": "drops the friendship line",
        },
        headers=bearer(label_key),
    )

    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in ("id", "warmer", "cooler", "kind", "annotator", "note")} == {
        "id": 1,
        "warmer": warmer["id"],
        "cooler": cooler["id"],
        "kind": "variant",
        "annotator": "ana",
        "note": "drops the friendship line",
    }


def test_create_pair_twice_by_one_annotator_is_409(client: TestClient, label_key: str) -> None:
    warmer, cooler = store(client, label_key, TEXTS[2]), store(client, label_key, TEXTS[1])
    pair = {"warmer": warmer["id"], "cooler": cooler["id"], "annotator": "ana"}
    client.post("/v1/pairs", json=pair, headers=bearer(label_key))

    again = client.post("/v1/pairs", json=pair, headers=bearer(label_key))
    other = client.post("/v1/pairs", json={**pair, "annotator": "ben"}, headers=bearer(label_key))

    body = assert_problem(again, 409, "pair-exists")
    expected = f"annotator 'ana' already judged message {warmer['id']} warmer than {cooler['id']} (pair 1)"
    assert body["detail"] == expected
    assert other.status_code == 201


def test_create_pair_of_one_message_is_422(client: TestClient, label_key: str) -> None:
    message = store(client, label_key)

    response = client.post(
        "/v1/pairs",
        json={"warmer": message["id"], "cooler": message["id"], "annotator": "a"},
        headers=bearer(label_key),
    )

    body = assert_problem(response, 422, "invalid-request")
    assert f"warmer and cooler must be two different messages; found {message['id']} for both" in body["detail"]


def test_create_pair_with_an_unknown_message_is_404(client: TestClient, label_key: str) -> None:
    message = store(client, label_key)

    response = client.post(
        "/v1/pairs", json={"warmer": message["id"], "cooler": 77, "annotator": "a"}, headers=bearer(label_key)
    )

    body = assert_problem(response, 404, "message-not-found")
    assert body["detail"] == "cooler 77 names no stored message"


# --------------------------------------------------------------------------------------------------------- timeline


def test_timeline_lists_one_relation_oldest_first_with_its_history(client: TestClient, label_key: str) -> None:
    later = store(client, label_key, TEXTS[1], **RELATION, date="2025-06-12")
    earlier = store(client, label_key, TEXTS[0], **RELATION, date="2024-06-12")
    latest = store(client, label_key, TEXTS[3], **RELATION, date="2026-06-12")
    store(client, label_key, TEXTS[2], sender="Kim Jong Un", recipient="Xi Jinping", date="2025-01-01")

    response = client.get("/v1/timeline", params=RELATION)

    assert response.status_code == 200
    body = response.json()
    points = body["messages"]
    assert [p["id"] for p in points] == [earlier["id"], later["id"], latest["id"]]
    assert [p["score"] for p in points] == [earlier["score"], later["score"], latest["score"]]
    ranks = sorted(p["score"] for p in points)
    assert [p["percentile"] for p in points] == [round(100 * (ranks.index(p["score"]) + 0.5) / 3, 2) for p in points]
    assert points[0]["change"] is None
    assert points[1]["change"] == pytest.approx(later["score"] - earlier["score"], abs=1e-3)
    low, high = later["interval"]
    assert points[1]["moved"] is not (low <= earlier["score"] <= high)


def test_timeline_without_recipient_is_422(client: TestClient) -> None:
    response = client.get("/v1/timeline", params={"sender": "Kim Jong Un"})

    assert assert_problem(response, 422, "invalid-request")["errors"][0]["field"] == "query.recipient"


def _message(message_id: int, score: float, halfwidth: float) -> Message:
    return Message(
        id=message_id,
        text="x",
        date=dt.date(2020, 1, message_id),
        score=score,
        interval_low=score - halfwidth,
        interval_high=score + halfwidth,
        model_version="v",
        labels=[],
    )


def test_build_timeline_flags_moves_beyond_the_interval_and_ranks_ties() -> None:
    messages = [_message(1, 50.0, 10.0), _message(2, 55.0, 10.0), _message(3, 80.0, 10.0), _message(4, 50.0, 10.0)]

    points = build_timeline(messages)

    assert [p.percentile for p in points] == [25.0, 62.5, 87.5, 25.0]  # the two 50s share the lowest half-ranks
    assert [p.change for p in points] == [None, 5.0, 25.0, -30.0]
    assert [p.moved for p in points] == [False, False, True, True]


# ---------------------------------------------------------------------------------------------------------- restart


def test_messages_labels_and_pairs_are_kept_across_a_restart(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as first:
        token = issue_key(first, "label")
        a, b = store(first, token, TEXTS[0]), store(first, token, TEXTS[1])
        first.put(f"/v1/messages/{a['id']}/label", json={"annotator": "ana", "score": 75}, headers=bearer(token))
        first.post("/v1/pairs", json={"warmer": a["id"], "cooler": b["id"], "annotator": "ana"}, headers=bearer(token))

    with TestClient(create_app(make_settings())) as second:
        again = second.get(f"/v1/messages/{a['id']}").json()
        relabel = second.put(
            f"/v1/messages/{b['id']}/label", json={"annotator": "ana", "score": 20}, headers=bearer(token)
        )  # the key survives the restart too
        with database_of(second).sessions() as session:
            count = session.scalar(select(func.count()).select_from(Message))

    assert again == {**a, "labels": again["labels"], "label": 75.0}
    assert [label["annotator"] for label in again["labels"]] == ["ana"]
    assert relabel.status_code == 200
    assert count == 2
