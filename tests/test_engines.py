"""The ONNX Runtime engines agree with the torch reference, or are refused with a reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.engines.export import onnx_files
from model.network import NoEncoder
from model.scorer import Scorer
from tests.factories import make_tiny_base, make_tiny_version

TEXTS = [
    "Dear friend, please accept my warmest congratulations on the national day. Our friendship is eternal.",
    "We firmly reject the statement of the ministry. We demand that the government note our protest.",
    "Happy new year, dear brother! I wish you good health and happiness.",
    "The letter has been received.",
]


@pytest.fixture(scope="module")
def version_copy(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shutil.copytree(tiny_version, tmp_path_factory.mktemp("engines") / "v")


def test_onnx_fp32_matches_torch_within_a_tenth_of_a_point(version_copy: Path, tiny_scorer: Scorer) -> None:
    onnx = Scorer.from_pretrained(version_copy, engine="onnx-fp32", parity_texts=TEXTS)
    assert onnx.engine.name == "onnx-fp32"
    assert onnx.engine_report["onnx-fp32"]["max_abs_diff"] <= 0.1
    assert np.allclose(onnx.predict(TEXTS), tiny_scorer.predict(TEXTS), atol=0.1)


def test_onnx_results_keep_the_full_shape(version_copy: Path, tiny_scorer: Scorer) -> None:
    onnx = Scorer.from_pretrained(version_copy, engine="onnx-fp32")
    ours, reference = onnx.score(TEXTS[:1])[0], tiny_scorer.score(TEXTS[:1])[0]
    assert [s.text for s in ours.sentences] == [s.text for s in reference.sentences]
    assert ours.markers == reference.markers


def test_onnx_int8_passes_parity_on_the_tiny_model_and_is_served(version_copy: Path) -> None:
    scorer = Scorer.from_pretrained(version_copy, engine="onnx-int8", parity_texts=TEXTS)
    report = scorer.engine_report
    assert "refused" not in report, report
    assert scorer.engine.name == "onnx-int8"
    assert report["onnx-int8"]["spearman"] >= 0.995 and report["onnx-int8"]["max_abs_diff"] <= 2.0


def test_onnx_export_is_cached_in_the_version_folder(version_copy: Path) -> None:
    Scorer.from_pretrained(version_copy, engine="onnx-fp32")
    exported = version_copy / "cache" / "encoder-fp32.onnx"
    before = exported.stat().st_mtime_ns
    Scorer.from_pretrained(version_copy, engine="onnx-fp32")
    assert exported.stat().st_mtime_ns == before


def test_unknown_engine_is_refused(version_copy: Path) -> None:
    with pytest.raises(ValueError, match="engine must be one of torch, onnx-fp32, onnx-int8; found 'tpu'"):
        Scorer.from_pretrained(version_copy, engine="tpu")


def test_export_fuses_attention_and_gelu_and_keeps_the_torch_model(tiny_version: Path, tmp_path: Path) -> None:
    import onnx

    scorer = Scorer.from_pretrained(shutil.copytree(tiny_version, tmp_path / "v"))
    before = scorer.net.encoder.config._attn_implementation
    paths = onnx_files(tmp_path / "v", scorer.net, scorer.predictor.window_batches(TEXTS))
    fp32_ops = {node.op_type for node in onnx.load(str(paths["onnx-fp32"])).graph.node}
    int8 = onnx.load(str(paths["onnx-int8"])).graph
    weights = {initializer.name for initializer in int8.initializer}
    assert "Attention" in fp32_ops and "BiasGelu" in fp32_ops
    assert "SkipLayerNormalization" not in fp32_ops  # slower here than Add + LayerNormalization (SLOW_FUSIONS)
    assert scorer.net.encoder.config._attn_implementation == before
    # Every weight product is quantized: none multiplies by an fp32 weight matrix any more.
    assert not [n.name for n in int8.node if n.op_type in ("MatMul", "Attention") and n.input[1] in weights]


def test_int8_keeps_its_most_sensitive_layer_fp32_and_quantizes_the_rest(tmp_path: Path) -> None:
    import onnx

    from model.engines.export import _input_channel_maxima, _layers, _sensitive_layers, _smooth

    base = make_tiny_base(tmp_path / "base", layers=3)  # a third of three layers: one may stay fp32
    folder = make_tiny_version(base, tmp_path / "v")
    scorer = Scorer.from_pretrained(folder)
    calibration = scorer.predictor.window_batches(TEXTS)
    paths = onnx_files(folder, scorer.net, calibration)
    fp32 = onnx.load(str(paths["onnx-fp32"]))
    layers = _layers(fp32)
    assert [len(layer) for layer in layers] == [4, 4, 4]  # Attention, attention output, feed-forward in and out
    kept = json.loads((folder / "cache" / "onnx.json").read_text())["int8_fp32_layers"]
    _smooth(fp32, _input_channel_maxima(fp32, calibration))  # as the export ranks them: after smoothing
    smoothed = tmp_path / "smoothed.onnx"
    onnx.save(fp32, str(smoothed))
    assert kept == _sensitive_layers(scorer.net, paths["onnx-fp32"], smoothed, layers, calibration)[:1]
    int8 = onnx.load(str(paths["onnx-int8"])).graph
    weights = {initializer.name for initializer in int8.initializer}
    still_fp32 = {n.name for n in int8.node if n.op_type in ("MatMul", "Attention") and n.input[1] in weights}
    assert still_fp32 == set(layers[kept[0]])


def test_smoothing_leaves_the_fp32_product_unchanged_and_caps_outlier_channels(
    tiny_version: Path, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime

    from model.engines.export import SMOOTH_RANK, _input_channel_maxima, _smooth, _weight_products

    scorer = Scorer.from_pretrained(shutil.copytree(tiny_version, tmp_path / "v"))
    batches = scorer.predictor.window_batches(TEXTS)
    original = onnx.load(str(onnx_files(tmp_path / "v", scorer.net)["onnx-fp32"]))
    maxima = _input_channel_maxima(original, batches)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(original)
    _smooth(smoothed, maxima)
    muls = [node for node in smoothed.graph.node if node.op_type == "Mul" and node.name.endswith("/smooth")]
    assert muls, "the tiny model's inputs have channels above the ninth-largest, so some must be smoothed"

    def states(model: onnx.ModelProto) -> np.ndarray:
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {"input_ids": batches[0].input_ids.numpy(), "attention_mask": batches[0].attention_mask.numpy()}
        return np.asarray(session.run(None, feeds)[0])

    assert np.allclose(states(smoothed), states(original), atol=1e-4)
    after = _input_channel_maxima(smoothed, batches)
    for node in _weight_products(smoothed):
        if node.input[0].endswith("/smoothed_input"):
            ceiling = np.sort(maxima[next(m.input[0] for m in muls if m.output[0] == node.input[0])])[::-1][SMOOTH_RANK]
            assert after[node.input[0]].max() <= ceiling * (1 + 1e-4)


def test_a_parity_verdict_is_reused_until_the_texts_change(tiny_version: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_version, tmp_path / "v")
    first = Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    again = Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    other = Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS[:3])
    assert "from_cache" not in first.engine_report
    assert again.engine_report == {**first.engine_report, "from_cache": True}
    assert "from_cache" not in other.engine_report and other.engine_report["parity_texts"] == 3


def test_an_unreadable_parity_cache_is_checked_again(tiny_version: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_version, tmp_path / "v")
    Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    (folder / "cache" / "parity.json").write_text("{not json")
    again = Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    assert "from_cache" not in again.engine_report and again.engine.name == "onnx-fp32"


def test_an_engine_prepared_in_a_child_process_is_found_cached(tiny_version: Path, tmp_path: Path) -> None:
    from model.prepare_engine import prepare_in_child

    folder = shutil.copytree(tiny_version, tmp_path / "v")
    assert prepare_in_child(folder, "onnx-int8", 1, TEXTS, TEXTS[:2]) is True
    scorer = Scorer.from_pretrained(
        folder, engine="onnx-int8", threads=1, parity_texts=TEXTS, calibration_texts=TEXTS[:2]
    )
    assert scorer.engine_report["from_cache"] is True
    assert scorer.engine.name in ("onnx-int8", "onnx-fp32")


def test_a_failed_preparation_says_so_and_leaves_the_load_to_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from model.prepare_engine import prepare_in_child

    assert prepare_in_child(tmp_path / "no-such-version", "onnx-int8", 1, TEXTS, []) is False
    assert "preparing onnx-int8" in caplog.text and "failed (exit 1)" in caplog.text


def test_a_prepared_version_is_recognised_and_a_changed_one_is_not(tiny_version: Path, tmp_path: Path) -> None:
    from model.prepare_engine import is_prepared

    folder = shutil.copytree(tiny_version, tmp_path / "v")
    assert not is_prepared(folder, "onnx-fp32", TEXTS)
    Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    assert is_prepared(folder, "onnx-fp32", TEXTS)
    assert not is_prepared(folder, "onnx-int8", TEXTS)  # no verdict for int8 yet
    assert not is_prepared(folder, "onnx-fp32", TEXTS[:2])  # other parity texts
    (folder / "cache" / "encoder-int8.onnx").unlink()
    assert not is_prepared(folder, "onnx-fp32", TEXTS)


def test_two_processes_preparing_one_version_at_once_both_succeed(tiny_version: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from model.prepare_engine import prepare_in_child

    folder = shutil.copytree(tiny_version, tmp_path / "v")  # as two workers of `serve --workers 2` on a first start
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: prepare_in_child(folder, "onnx-int8", 1, TEXTS, TEXTS[:2]), range(2)))
    assert done == [True, True]
    assert sorted(p.name for p in (folder / "cache").iterdir()) == [
        "encoder-fp32.onnx",
        "encoder-int8.onnx",
        "onnx.json",
        "parity.json",
    ]  # no scratch file left behind
    scorer = Scorer.from_pretrained(
        folder, engine="onnx-int8", threads=1, parity_texts=TEXTS, calibration_texts=TEXTS[:2]
    )
    assert scorer.engine_report["from_cache"] is True


def test_int8_logit_fit_is_recorded_at_export_and_loaded_with_the_int8_engine(
    tiny_version: Path, tmp_path: Path
) -> None:
    import json

    from model.engines import IDENTITY, OnnxEngine

    scorer = Scorer.from_pretrained(shutil.copytree(tiny_version, tmp_path / "v"))
    paths = onnx_files(tmp_path / "v", scorer.net, scorer.predictor.window_batches(TEXTS))
    slope, intercept = json.loads((tmp_path / "v" / "cache" / "onnx.json").read_text())["int8_logit_fit"]
    assert OnnxEngine(paths["onnx-int8"], "onnx-int8").logit_fit == (slope, intercept)
    assert OnnxEngine(paths["onnx-fp32"], "onnx-fp32").logit_fit == IDENTITY
    assert 0.5 < slope < 2.0  # a correction of int8 noise, not a new scale


def test_logit_fit_is_the_identity_when_int8_equals_fp32(tiny_version: Path, tmp_path: Path) -> None:
    from model.engines.export import _fit_int8_logits

    scorer = Scorer.from_pretrained(shutil.copytree(tiny_version, tmp_path / "v"))
    paths = onnx_files(tmp_path / "v", scorer.net)
    same = {"onnx-fp32": paths["onnx-fp32"], "onnx-int8": paths["onnx-fp32"]}
    slope, intercept = _fit_int8_logits(same, scorer.net, scorer.predictor.window_batches(TEXTS))
    assert slope == pytest.approx(1.0, abs=1e-9) and intercept == pytest.approx(0.0, abs=1e-9)
    assert _fit_int8_logits(paths, scorer.net, []) == (1.0, 0.0)  # nothing to fit on


def test_scorer_applies_the_engines_logit_fit_before_the_sigmoid(tiny_scorer: Scorer) -> None:
    plain = tiny_scorer.predict(TEXTS)
    try:
        tiny_scorer.engine.logit_fit = (2.0, 0.5)  # type: ignore[misc]
        fitted = tiny_scorer.predict(TEXTS)
    finally:
        tiny_scorer.engine.logit_fit = (1.0, 0.0)  # type: ignore[misc]
    logits = np.log(plain / (100 - plain))
    assert np.allclose(fitted, 100 / (1 + np.exp(-(2.0 * logits + 0.5))), atol=1e-6)


def test_a_prepared_engine_loads_without_the_encoder_and_scores_the_same(tiny_version: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_version, tmp_path / "v")
    assert Scorer.from_prepared(folder, engine="onnx-fp32") is None  # nothing prepared: the caller loads torch
    full = Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    light = Scorer.from_prepared(folder, engine="onnx-fp32")
    assert light is not None and light.engine.name == "onnx-fp32" and isinstance(light.net.encoder, NoEncoder)
    assert light.engine_report["from_cache"] is True
    ours, theirs = light.score(TEXTS), full.score(TEXTS)
    assert [r.to_dict() for r in ours] == [r.to_dict() for r in theirs]


def test_a_prepared_engine_is_not_used_once_the_version_changed(tiny_version: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_version, tmp_path / "v")
    Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "created": "another day"}))
    assert Scorer.from_prepared(folder, engine="onnx-fp32") is None


def test_an_engine_refused_by_parity_is_not_loaded_as_prepared(tiny_version: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_version, tmp_path / "v")
    Scorer.from_pretrained(folder, engine="onnx-fp32", parity_texts=TEXTS)
    cache = folder / "cache" / "parity.json"
    stored = json.loads(cache.read_text())
    stored["verdicts"]["onnx-fp32"] = {"engine": "torch", "refused": {"onnx-fp32": "differs from torch"}}
    cache.write_text(json.dumps(stored))
    assert Scorer.from_prepared(folder, engine="onnx-fp32") is None


def test_a_prepared_engine_scores_in_a_process_that_never_imports_transformers(
    tiny_version: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    folder = shutil.copytree(tiny_version, tmp_path / "v")
    Scorer.from_pretrained(folder, engine="onnx-int8", parity_texts=TEXTS)
    program = (
        "import sys; from model.scorer import Scorer; "
        f"scorer = Scorer.from_prepared({str(folder)!r}); "
        f"print(scorer.engine.name, round(scorer.score([{TEXTS[0]!r}])[0].score, 1), 'transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    engine, score, imported = done.stdout.split()
    assert (engine, imported) == ("onnx-int8", "False")
    assert 0 <= float(score) <= 100
