"""Prepare a version's ONNX engine in a process of its own: export, calibrate, quantize, check parity, cache.

A long-lived server calls ``prepare_in_child`` before it loads a version with an ONNX engine. The preparation holds
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

log = logging.getLogger("diplotone.engines")
PREPARE_TIMEOUT_S = 900  # an export takes ~15 s for MiniLM on 2 cores; this only catches a hung child


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
    from model.predictor import Predictor

    if len(argv) != 1:
        print("usage: python -m model.prepare_engine REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    os.nice(request.get("niceness", 0))  # the server's model threads run at this priority; so does their preparation
    predictor = Predictor.from_pretrained(
        request["folder"],
        engine=request["engine"],
        threads=request["threads"],
        parity_texts=request["parity_texts"],
        calibration_texts=request["calibration_texts"],
    )
    print(json.dumps(predictor.engine_report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
