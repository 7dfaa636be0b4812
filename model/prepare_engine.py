"""Prepare a version's ONNX engine in a process of its own: export, calibrate, quantize, check parity, cache.

A training run started by the service prepares its candidate before the run ends (``prepare``, given the service's
``engine_request``), so activating the candidate only opens cached files; the service prepares any other version in a
child (``prepare_in_child``) while it serves that version on torch (``service.model_slot``). The preparation holds
the torch model, the exporter's graphs, the calibration and parity sessions at once (about a gigabyte for MiniLM, on
top of the version already serving during a reload); in a child that memory goes back to the system when it exits,
where in the server it would stay in the heap. The server's own load then finds the files and the parity verdict
cached and only opens the chosen engine.

    python -m model.prepare_engine REQUEST.json  # {"folder", "engine", "threads", "parity_texts", ...}
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.contract import split_texts

log = logging.getLogger("diplotone.engines")
PREPARE_TIMEOUT_S = 900  # an export takes ~15 s for MiniLM on 2 cores; this only catches a hung child
CALIBRATION_TEXTS = 64  # train-split messages whose activations set the int8 smoothing scales


def engine_request(engine: str, threads: int | None, corpus_dir: Path) -> dict[str, Any] | None:
    """What preparing ``engine`` takes: the corpus test split for its parity check, train-split texts for the int8
    calibration (``None`` for torch, which needs nothing). The service and the training runs it starts build it here,
    so a run's preparation is the one the service would find cached."""
    if engine == "torch":
        return None
    texts = split_texts(corpus_dir, ("train", "test"))
    if not texts["test"]:
        log.warning("engine %s will serve without a parity check: no test-split texts in %s", engine, corpus_dir)
    return {
        "engine": engine,
        "threads": threads,
        "parity_texts": texts["test"],
        "calibration_texts": texts["train"][:CALIBRATION_TEXTS],
    }


def prepare(folder: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Export, calibrate, quantize and check ``request``'s engine for the version in ``folder``, in this process;
    everything is cached beside the version. Returns the engine report (which engine passed parity, the gaps)."""
    from model.predictor import Predictor

    predictor = Predictor.from_pretrained(
        folder,
        engine=request["engine"],
        threads=request["threads"],
        parity_texts=request["parity_texts"],
        calibration_texts=request["calibration_texts"],
    )
    return predictor.engine_report


def is_prepared(folder: Path, engine: str, parity_texts: Sequence[str]) -> bool:
    """Whether ``folder`` already holds this recipe's ONNX files and a parity verdict for ``engine`` on these texts
    (a restart): then there is nothing for a child to do. Calibration texts are not compared; if only they changed,
    the load re-exports in-process."""
    from model.engines.export import exported
    from model.engines.parity import ParityCache

    return exported(folder) and ParityCache(folder / "cache", parity_texts).get(engine) is not None


def prepare_in_child(
    folder: Path,
    engine: str,
    threads: int | None,
    parity_texts: Sequence[str],
    calibration_texts: Sequence[str],
    niceness: int = 0,
) -> bool:
    """Run the preparation in a child process at ``niceness``, unless ``is_prepared`` already; False (with the
    child's last lines logged) if it did not succeed, in which case the caller's own load does the work in-process."""
    if is_prepared(folder, engine, parity_texts):
        return True
    request = {
        "niceness": niceness,
        "folder": str(folder),
        "engine": engine,
        "threads": threads,
        "parity_texts": list(parity_texts),
        "calibration_texts": list(calibration_texts),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="diplotone-prepare-") as file:
        json.dump(request, file)
        file.flush()
        command = [sys.executable, "-m", "model.prepare_engine", file.name]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PREPARE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            log.warning("preparing %s for %s took over %d s; loading in-process", engine, folder, PREPARE_TIMEOUT_S)
            return False
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        log.warning(
            "preparing %s for %s failed (exit %d); loading in-process:\n%s", engine, folder, done.returncode, tail
        )
        return False
    return True


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m model.prepare_engine REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    os.nice(request.get("niceness", 0))  # the server's model threads run at this priority; so does their preparation
    print(json.dumps(prepare(Path(request["folder"]), request)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
