from __future__ import annotations

import pytest

from model.bands import band_of
from model.markers import count_markers, find_markers
from model.text import split_sentences


def test_split_keeps_abbreviations_and_breaks_on_salutations() -> None:
    text = (
        "To H.E. Mr. Lee, President\n\nDear Comrade Chairman,\nOn the 75th anniversary, greetings! We agree. "
        "Dr. Kim said so."
    )
    assert [s.text for s in split_sentences(text)] == [
        "To H.E. Mr. Lee, President",
        "Dear Comrade Chairman,",
        "On the 75th anniversary, greetings!",
        "We agree.",
        "Dr. Kim said so.",
    ]


def test_split_spans_are_the_sentences_without_surrounding_whitespace() -> None:
    text = "  First one.  Second one?\n\nThird "
    assert [(s.start, s.end, s.text) for s in split_sentences(text)] == [
        (2, 12, "First one."),
        (14, 25, "Second one?"),
        (27, 32, "Third"),
    ]


def test_markers_find_each_kind_with_spans() -> None:
    text = (
        "Dear brother, under your wise leadership our unbreakable friendship, forged in struggle, will continue "
        "to grow. I wish you good health. We value our cooperation."
    )
    kinds = count_markers(find_markers(text))
    assert kinds["friendship"] == 2 and kinds["superlative"] == 1 and kinds["personal_praise"] == 1
    assert kinds["shared_history"] == 1 and kinds["wishes"] == 2 and kinds["commitment"] == 1
    assert kinds["cooperation"] == 1
    assert [(m.kind, m.start, m.end, m.text) for m in find_markers(text)] == [
        ("friendship", 0, 12, "Dear brother"),
        ("personal_praise", 14, 40, "under your wise leadership"),
        ("superlative", 45, 56, "unbreakable"),
        ("friendship", 57, 67, "friendship"),
        ("shared_history", 69, 78, "forged in"),
        ("commitment", 89, 105, "will continue to"),
        ("wishes", 112, 122, "I wish you"),
        ("wishes", 123, 134, "good health"),
        ("cooperation", 149, 160, "cooperation"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "An unfriendly act.",
        "The befriended envoy.",
        "A friendly-fire incident.",
        "A bestseller.",
        "Cooperationism.",
        "Noncooperation.",
    ],
)
def test_markers_match_whole_words_only(text: str) -> None:
    assert find_markers(text) == []


def test_a_marker_word_inside_punctuation_still_counts() -> None:
    assert [(m.kind, m.text) for m in find_markers('"Friendly", (cooperation).')] == [
        ("friendship", "Friendly"),
        ("cooperation", "cooperation"),
    ]


def test_protest_note_has_no_warm_markers() -> None:
    kinds = count_markers(
        find_markers("The Ministry categorically rejects the baseless claims and demands a retraction.")
    )
    assert sum(kinds.values()) == 0


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (0, "cold"),
        (19.99, "cold"),
        (20, "formal"),
        (59.9, "cordial"),
        (60, "warm"),
        (80, "effusive"),
        (100, "effusive"),
    ],
)
def test_band_edges_are_half_open(score: float, band: str) -> None:
    assert band_of(score) == band


def test_band_outside_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="found 101"):
        band_of(101)
