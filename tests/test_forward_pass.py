"""One forward pass: training, the Predictor and the ONNX export's calibration pool and read the head alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.encoding import collate_windows
from model.engines.export import _head_logits
from model.engines.runtime import TorchEngine
from model.network import ADAPTER, merge_plain_lora
from model.scorer import Scorer
from tests.factories import COLD_SENTENCES, WARM_SENTENCES, make_tiny_version

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


def test_a_plain_lora_adapter_merges_without_peft_exactly_as_peft_merges_it(tiny_base: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel

    version = make_tiny_version(tiny_base, tmp_path / "tiny-adapted", version="tiny-adapted", adapter_std=0.2)
    ours = AutoModel.from_pretrained(str(tiny_base), add_pooling_layer=False)
    merged = merge_plain_lora(ours, version / ADAPTER)
    theirs = PeftModel.from_pretrained(
        AutoModel.from_pretrained(str(tiny_base), add_pooling_layer=False), str(version / ADAPTER)
    ).merge_and_unload()
    base = AutoModel.from_pretrained(str(tiny_base), add_pooling_layer=False).state_dict()

    assert merged
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    reference = theirs.state_dict()
    gaps = [float((weight - reference[name]).abs().max()) for name, weight in ours.state_dict().items()]
    assert max(gaps) <= 1e-6
    changed = [name for name, weight in ours.state_dict().items() if not torch.equal(weight, base[name])]
    assert changed and all(".query." in name or ".value." in name for name in changed)


def test_an_adapter_that_is_not_plain_lora_is_left_to_peft(tiny_base: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    version = make_tiny_version(tiny_base, tmp_path / "tiny-dora", version="tiny-dora", adapter_std=0.2)
    config_file = version / ADAPTER / "adapter_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"use_dora": True}))
    encoder = AutoModel.from_pretrained(str(tiny_base), add_pooling_layer=False)
    before = {name: weight.clone() for name, weight in encoder.state_dict().items()}

    assert merge_plain_lora(encoder, version / ADAPTER) is False
    assert all(torch.equal(weight, before[name]) for name, weight in encoder.state_dict().items())
