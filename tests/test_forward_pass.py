"""One forward pass: training, the Predictor and the ONNX export's calibration pool and read the head alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.encoding import collate_windows
from model.engines.export import _head_logits
from model.engines.runtime import TorchEngine
from model.scorer import Scorer
from tests.factories import COLD_SENTENCES, WARM_SENTENCES

TEXTS = [" ".join(WARM_SENTENCES * 2), " ".join(COLD_SENTENCES), "Happy new year.", " ".join(WARM_SENTENCES[:2])]


def test_training_time_scores_equal_scorer_predict(tiny_scorer: Scorer) -> None:
    predictor = tiny_scorer.predictor
    encoded = predictor.encode(TEXTS)
    assert len(encoded[0].windows) > 2  # the long text spans windows, so pooling across them is exercised
    tokenizer = predictor.tokenizer
    batch = collate_windows(
        [w for m in encoded for w in m.windows], tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    )
    with torch.no_grad():
        trained = predictor.net(
            batch.input_ids, batch.attention_mask, batch.pool_mask, batch.window_message, len(TEXTS)
        )
    assert np.allclose(100 * trained.numpy(), tiny_scorer.predict(TEXTS), atol=1e-4)


def test_export_calibration_logits_are_the_predictors(tiny_scorer: Scorer) -> None:
    """The int8 logit fit and the layer ranking read the head as serving does: content tokens only."""
    predictor = tiny_scorer.predictor
    for text in (WARM_SENTENCES[1], COLD_SENTENCES[0], "Happy new year."):
        [batch] = predictor.window_batches([text])
        assert len(batch.input_ids) == 1  # one window: its logit is the message's
        [logit] = _head_logits(TorchEngine(predictor.net), predictor.net, [batch])
        score = float(tiny_scorer.predict([text])[0])
        assert 100 / (1 + np.exp(-logit)) == pytest.approx(score, abs=1e-9)
