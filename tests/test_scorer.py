"""The Scorer on a tiny random BERT: invariants, not shapes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.encoding import encode_messages
from model.errors import ArtifactCorrupt, EmptyInput, InputTooLong
from model.network import NetworkConfig
from model.predictor import Predictor
from model.scorer import Scorer
from tests.factories import make_tiny_network, save_tiny_version

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


def test_a_saved_adapter_loads_back_to_the_same_scores(tiny_base: Path, tmp_path: Path) -> None:
    net, tokenizer = make_tiny_network(tiny_base, adapter_std=0.5)  # B ≠ 0: the adapter changes the encoder
    config = NetworkConfig(mode="lora", max_tokens=24)
    in_memory = Predictor(net, tokenizer, config, version="in-memory").predict([WARM, COLD])
    with net.encoder.disable_adapter():
        without_adapter = Predictor(net, tokenizer, config, version="base").predict([WARM, COLD])
    assert np.abs(in_memory - without_adapter).max() > 1.0  # else a lost adapter would go unnoticed
    folder = save_tiny_version(net, tokenizer, tiny_base, tmp_path / "saved")
    assert np.allclose(Scorer.from_pretrained(folder).predict([WARM, COLD]), in_memory, atol=1e-4)


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
    [message] = encode_messages(tiny_scorer.tokenizer, [text], 12)  # 10 content tokens a window
    # sentences of 5, 5, 6 and 8 tokens: the first two share a window, the others do not fit beside them
    assert [w.token_sentences for w in message.windows] == [[0] * 5 + [1] * 5, [2] * 6, [3] * 8]


def test_result_has_the_design_shape(tiny_scorer: Scorer) -> None:
    result = tiny_scorer.score([WARM])[0].to_dict()
    assert set(result) == {"score", "band", "interval", "sentences", "markers", "model_version", "unusual", "distance"}
    # the tiny version's calibration is a constant 12-point half-width (tests/factories.py), clipped to the scale
    low, high = max(0.0, result["score"] - 12.0), min(100.0, result["score"] + 12.0)
    assert result["interval"] == [pytest.approx(low, abs=1e-3), pytest.approx(high, abs=1e-3)]
    assert result["model_version"] == "tiny-0001"
    assert [s["text"] for s in result["sentences"]] == [
        "Dear friend, please accept my warmest congratulations on the national day.",
        "Our friendship is eternal.",
    ]
    assert {"kind": "superlative", "start": 30, "end": 37, "text": "warmest"} in result["markers"]


def test_pooled_contribution_is_the_score_without_the_sentence(tiny_scorer: Scorer) -> None:
    [result] = tiny_scorer.score([WARM])
    # Computed here from the encoder's token states: the message fits one window, so the score is the head on the mean
    # of its content tokens, and a sentence's contribution the score less the head on the other sentence's tokens.
    encoded = tiny_scorer.tokenizer(WARM, return_offsets_mapping=True, return_tensors="pt")
    assert encoded["input_ids"].shape[1] <= tiny_scorer.max_tokens
    with torch.no_grad():
        states = tiny_scorer.net.token_states(encoded["input_ids"], encoded["attention_mask"])[0, 1:-1].double()
    weight, bias = (p.detach().double() for p in (tiny_scorer.net.head.weight, tiny_scorer.net.head.bias))

    def score_of(rows: torch.Tensor) -> float:
        return float(torch.sigmoid(states[rows].mean(dim=0) @ weight.T + bias) * 100)

    starts = encoded["offset_mapping"][0, 1:-1, 0]
    first, second = result.sentences
    in_second = starts >= second.start
    assert result.score == pytest.approx(score_of(torch.ones_like(in_second)), abs=1e-3)
    assert first.contribution == pytest.approx(result.score - score_of(in_second), abs=1e-3)
    assert second.contribution == pytest.approx(result.score - score_of(~in_second), abs=1e-3)
    assert first.contribution > 1.0 and second.contribution < -1.0  # signs and sizes of this tiny model


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


def test_compare_matches_reworded_sentences_and_names_the_new_one(tiny_scorer: Scorer) -> None:
    earlier = "Dear friend, happy new year. We wish you good health and long life. The letter has been received."
    later = "Dear friend, a happy new year. We wish you health and a long life. Our unbreakable friendship is eternal."
    explanation = tiny_scorer.compare(earlier, later).explanation
    # The first two sentences are reworded (word overlap ≥ 0.5): counterparts, so neither side lists them.
    assert [s.text for s in explanation.only_in_a] == ["The letter has been received."]
    assert [s.text for s in explanation.only_in_b] == ["Our unbreakable friendship is eternal."]
    assert explanation.summary[-2:] == [
        'did not appear this time: "The letter has been received."',
        'new this time: "Our unbreakable friendship is eternal."',
    ]


@pytest.mark.parametrize(
    ("later", "matched"),
    [
        ("Dear friend. We wish them luck.", True),  # {we, wish} of 4 words each side: Dice 0.5, a counterpart
        ("Dear friend. We wish them good luck.", False),  # 4 and 5 words: Dice 4/9, something else
    ],
)
def test_compare_counts_half_the_words_shared_as_a_counterpart(tiny_scorer: Scorer, later: str, matched: bool) -> None:
    explanation = tiny_scorer.compare("Dear friend. We wish you health.", later).explanation
    assert [s.text for s in explanation.only_in_a] == ([] if matched else ["We wish you health."])
    assert [s.text for s in explanation.only_in_b] == ([] if matched else [later.split(". ")[1]])


def test_compare_of_identical_texts_is_even(tiny_scorer: Scorer) -> None:
    comparison = tiny_scorer.compare(WARM, WARM)
    assert comparison.delta == 0.0 and comparison.p_b_warmer == 0.5
    assert comparison.explanation.only_in_a == comparison.explanation.only_in_b == []


def test_windows_are_balanced_rather_than_leaving_a_scrap(tiny_scorer: Scorer) -> None:
    text = " ".join(["We wish you health."] * 12)  # 5 tokens a sentence, 60 in all
    [message] = encode_messages(tiny_scorer.tokenizer, [text], 52)  # 50 content tokens a window
    assert [len(w.token_ids) for w in message.windows] == [30, 30]
