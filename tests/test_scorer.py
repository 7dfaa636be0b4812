"""The Scorer on a tiny random BERT: invariants, not shapes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model.encoding import encode_messages
from model.errors import ArtifactCorrupt, EmptyInput, InputTooLong
from model.scorer import Scorer

WARM = "Dear friend, please accept my warmest congratulations on the national day. Our friendship is eternal."
COLD = "We firmly reject the statement of the ministry. We demand that the government note our protest."
LONG_SENTENCE = "Our peoples have a long history of friendship and cooperation and mutual trust " * 8


def test_batch_scores_equal_single_scores(tiny_scorer: Scorer) -> None:
    texts = [WARM, COLD, "Happy new year, dear brother!", WARM + " " + COLD]
    together = [r.score for r in tiny_scorer.score(texts)]
    alone = [tiny_scorer.score([text])[0].score for text in texts]
    assert np.allclose(together, alone, atol=1e-4)


def test_predict_agrees_with_score(tiny_scorer: Scorer) -> None:
    texts = [WARM, COLD]
    assert np.allclose(tiny_scorer.predict(texts), [r.score for r in tiny_scorer.score(texts)], atol=1e-4)


def test_save_and_load_keep_the_scores(tiny_version: Path, tiny_scorer: Scorer, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_version, tmp_path / "copy")
    assert np.allclose(Scorer.from_pretrained(copy).predict([WARM, COLD]), tiny_scorer.predict([WARM, COLD]))


def test_long_text_spans_windows_and_drops_no_token(tiny_scorer: Scorer) -> None:
    text = " ".join(f"{LONG_SENTENCE.strip()}. We wish you health and happiness." for _ in range(46))
    assert len(text.split()) > 5000
    [message] = encode_messages(tiny_scorer.tokenizer, [text], tiny_scorer.max_tokens)
    tokens = tiny_scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(message.windows) > 100
    assert all(len(w.token_ids) <= tiny_scorer.max_tokens - 2 for w in message.windows)
    assert [t for w in message.windows for t in w.token_ids] == tokens
    [result] = tiny_scorer.score([text])
    assert 0 <= result.score <= 100 and len(result.sentences) == 92


def test_windows_start_at_sentence_boundaries(tiny_scorer: Scorer) -> None:
    text = "We wish you health. Our friendship is eternal. We firmly reject the statement. Happy new year."
    [message] = encode_messages(tiny_scorer.tokenizer, [text], 12)
    starts = [w.token_sentences[0] for w in message.windows]
    previous_last = [w.token_sentences[-1] for w in message.windows][:-1]
    assert all(start != last for start, last in zip(starts[1:], previous_last, strict=True))


def test_result_has_the_design_shape(tiny_scorer: Scorer) -> None:
    result = tiny_scorer.score([WARM])[0].to_dict()
    assert set(result) == {"score", "band", "interval", "sentences", "markers", "model_version", "unusual", "distance"}
    low, high = result["interval"]
    assert low <= result["score"] <= high
    assert result["model_version"] == "tiny-0001"
    assert [s["text"] for s in result["sentences"]] == [
        "Dear friend, please accept my warmest congratulations on the national day.",
        "Our friendship is eternal.",
    ]
    assert {"kind": "superlative", "start": 30, "end": 37, "text": "warmest"} in result["markers"]


def test_pooled_contribution_is_the_score_without_the_sentence(tiny_scorer: Scorer) -> None:
    [result] = tiny_scorer.score([WARM])
    # Removing a sentence's tokens from the pool: message and sentence means recombine exactly.
    first, second = result.sentences
    assert first.contribution != 0.0 and second.contribution != 0.0


def test_exact_contribution_matches_rescoring_the_cut_text(tiny_scorer: Scorer) -> None:
    text = WARM + " We wish you health."
    [result] = tiny_scorer.score([text], exact_contributions=True)
    for sentence in result.sentences:
        cut = (text[: sentence.start] + " " + text[sentence.end :]).strip()
        expected = result.score - float(tiny_scorer.predict([cut])[0])
        assert sentence.contribution == pytest.approx(expected, abs=1e-3)


def test_single_sentence_contributes_nothing_measurable(tiny_scorer: Scorer) -> None:
    [result] = tiny_scorer.score(["Happy new year."])
    assert result.sentences[0].contribution == 0.0


def test_empty_text_raises_empty_input(tiny_scorer: Scorer) -> None:
    with pytest.raises(EmptyInput, match="only whitespace"):
        tiny_scorer.score(["   \n "])


def test_text_over_the_limit_raises_input_too_long(tiny_scorer: Scorer) -> None:
    with pytest.raises(InputTooLong, match="text has 101 characters; the limit is 100"):
        tiny_scorer.score(["x" * 101], max_chars=100)


def test_damaged_weights_raise_artifact_corrupt_naming_the_file(tiny_version: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_version, tmp_path / "damaged")
    head = copy / "head.safetensors"
    head.write_bytes(head.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ArtifactCorrupt, match=r"head\.safetensors: sha256 is"):
        Scorer.from_pretrained(copy)


def test_missing_file_raises_artifact_corrupt(tiny_version: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_version, tmp_path / "missing")
    (copy / "calibration.json").unlink()
    with pytest.raises(ArtifactCorrupt, match=r"calibration\.json: listed in the manifest but missing"):
        Scorer.from_pretrained(copy)


def test_damaged_base_weights_are_refused(tiny_base: Path, tiny_version: Path, tmp_path: Path) -> None:
    from tests.factories import make_tiny_version

    base = shutil.copytree(tiny_base, tmp_path / "base")
    version = make_tiny_version(base, tmp_path / "v")
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(ArtifactCorrupt, match=r"model\.safetensors: sha256 is"):
        Scorer.from_pretrained(version)


def test_compare_names_the_dropped_sentence(tiny_scorer: Scorer) -> None:
    earlier = "Dear friend, happy new year. Our friendship is eternal and unbreakable. We wish you health."
    later = "Dear friend, happy new year. We wish you health."
    comparison = tiny_scorer.compare(earlier, later)
    assert [s.text for s in comparison.explanation.only_in_a] == ["Our friendship is eternal and unbreakable."]
    assert comparison.explanation.only_in_b == []
    assert "friendship references: 2 → 1" in comparison.explanation.summary
    assert 'did not appear this time: "Our friendship is eternal and unbreakable."' in comparison.explanation.summary
    assert comparison.delta == pytest.approx(comparison.b.score - comparison.a.score, abs=1e-3)
    assert (comparison.p_b_warmer > 0.5) == (comparison.delta > 0)


def test_compare_of_identical_texts_is_even(tiny_scorer: Scorer) -> None:
    comparison = tiny_scorer.compare(WARM, WARM)
    assert comparison.delta == 0.0 and comparison.p_b_warmer == 0.5
    assert comparison.explanation.only_in_a == comparison.explanation.only_in_b == []


def test_windows_are_balanced_rather_than_leaving_a_scrap(tiny_scorer: Scorer) -> None:
    text = " ".join(["We wish you health."] * 12)  # 5 tokens a sentence, 60 in all
    [message] = encode_messages(tiny_scorer.tokenizer, [text], 52)  # 50 content tokens a window
    assert [len(w.token_ids) for w in message.windows] == [30, 30]
