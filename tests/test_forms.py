"""The counting of real-message forms, the check of a composing pass, and the assembly of passes into the corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.assemble import assemble, drawn_split
from training.forms import check_part, form_figures


def test_form_figures_count_each_form() -> None:
    texts = [
        "Dear friend, our friendship [...] endures [he wrote].",
        'Thank you @PresidentKestria for your "kind" wishes.',
        "Your Excellency, please accept my congratulations.",
        " ".join(["word"] * 310),
    ]
    figures = form_figures(texts)
    assert figures["ellipsis_joins"] == 0.25
    assert figures["bracketed_connectives"] == 0.25  # "[he wrote]", not "[...]"
    assert figures["handles"] == 0.25
    assert figures["quotation_marks"] == 0.25
    assert figures["dear_or_excellency_opening"] == 0.5
    assert (figures["under_60_words"], figures["over_300_words"]) == (0.75, 0.25)


def test_form_figures_refuse_no_texts() -> None:
    with pytest.raises(ValueError, match="expected at least one text to count forms on; found none"):
        form_figures([])


def _record(number: int, **changes: object) -> dict:
    record = {
        "id": f"t-{number:03d}", "text": f"Message number {number} of warm friendship.", "sender": "A",
        "recipient": "B", "date": "2020-01-01", "occasion": "national_day", "score": 50.0, "group": f"t-g{number:03d}",
        "voice": "nordic", "form": "letter", "kind": "other",
    }  # fmt: skip
    return record | changes


def test_check_part_names_each_problem() -> None:
    problems = check_part(
        [_record(1, score=120), _record(2, kind="poem"), _record(3, excerpt_of="t-999"), _record(4, date="May 1")],
        "part",
    )
    assert any("record 1 (t-001): score must be a number in [0, 100]; found 120" in p for p in problems)
    assert any("kind must be one of" in p and "found 'poem'" in p for p in problems)
    assert any("excerpt_of 't-999' is not a record of this pass" in p for p in problems)
    assert any("date must be YYYY-MM-DD; found 'May 1'" in p for p in problems)


def test_assemble_appends_parts_with_hash_splits_and_held_out_in_test(tmp_path: Path) -> None:
    (tmp_path / "messages.jsonl").write_text(json.dumps({"id": "old-1"}) + "\n")
    (tmp_path / "pairs.jsonl").write_text("")
    drawn = [_record(n) for n in range(1, 41)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in drawn))
    (tmp_path / "t-pairs.jsonl").write_text(json.dumps({"warmer": "t-001", "cooler": "t-002"}) + "\n")
    held = [_record(n, id=f"h-{n:03d}", group=f"h-g{n}") for n in range(1, 6)]
    (tmp_path / "h.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))

    added = assemble([tmp_path / "t.jsonl", tmp_path / "h.jsonl"], ("h-",), tmp_path)

    rows = [json.loads(line) for line in (tmp_path / "messages.jsonl").read_text().splitlines()]
    assert added == (45, 1) and rows[0] == {"id": "old-1"}
    assert all(r["split"] == "test" for r in rows if r["id"].startswith("h-"))
    assert [r["split"] for r in rows[1:41]] == [drawn_split(r["group"]) for r in drawn]
    assert {r["split"] for r in rows[1:41]} == {"train", "validation", "test"}


def test_assemble_refuses_ids_already_in_the_corpus(tmp_path: Path) -> None:
    (tmp_path / "messages.jsonl").write_text(json.dumps({"id": "t-001"}) + "\n")
    (tmp_path / "pairs.jsonl").write_text("")
    (tmp_path / "t.jsonl").write_text(json.dumps(_record(1)) + "\n")
    with pytest.raises(ValueError, match=r"ids already in the corpus: \['t-001'\]"):
        assemble([tmp_path / "t.jsonl"], (), tmp_path)
    assert (tmp_path / "messages.jsonl").read_text().count("\n") == 1  # nothing appended
