"""Scoring a Parquet archive on a Ray cluster: the same Scorer and the same result rows as ``diplotone.archive``,
run by Ray Data over a fixed pool of actors, each loading the model once.

Ray reads the input's blocks, hands them in batches to the actors (``map_batches``), and writes each scored block
as its own Parquet part into the output folder, beside the parts of earlier runs; a re-run skips the ids they hold.
Ray restarts an actor whose process dies and retries its batch (Ray Data's defaults for actor pools), so a lost
worker costs time, not rows. Needs the ``ray`` extra: ``pip install 'diplotone[ray]'``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import diplotone
import model
from diplotone.archive import BATCH, ArchiveError, Survey, check_same_version, result_rows, rows_table

LOCAL = "local"
# Shipped to the workers as the running code (Ray's py_modules), so every node scores with the driver's code; the
# weights travel as bytes instead (below), and caches are not shipped.
CODE_EXCLUDES = ["__pycache__/", "shipped/", "cache/"]


class BatchScorer:
    """One Ray actor's scorer: the version folder rebuilt from bytes in a scratch folder, loaded once."""

    def __init__(self, files: dict[str, bytes], name: str, threads: int, survey: Survey) -> None:
        import torch

        from model.scorer import Scorer

        torch.set_num_threads(threads)
        self.scratch = tempfile.TemporaryDirectory(prefix="diplotone-ray-")
        folder = Path(self.scratch.name) / name
        for relative, data in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)
        self.scorer = Scorer.from_pretrained(folder)  # checks every file against the manifest again
        self.survey = survey

    def __call__(self, batch: Any) -> Any:  # pyarrow.Table in, pyarrow.Table out
        records = [r for r in batch.to_pylist() if str(r["id"]) not in self.survey.done]
        results = self.scorer.score([r["text"] for r in records]) if records else []
        return rows_table(result_rows(records, results, self.survey.metadata), self.survey)


def score_on_ray(
    survey: Survey,
    version: Path,
    version_name: str,
    address: str,
    *,
    workers: int = 2,
    threads: int = 1,
    batch: int = BATCH,
) -> int:
    """Score the rows of ``survey`` not yet written, on the cluster at ``address`` (``"local"``: start one here).

    ``workers`` actors of ``threads`` torch threads each (and as many CPUs reserved); returns the rows written.
    """
    if survey.input_format != "parquet" or survey.output_format != "parquet":
        raise ArchiveError(
            f"--ray reads and writes Parquet; found {survey.input_format} in and {survey.output_format} out "
            "(score a JSON Lines or CSV file without --ray, or convert it to Parquet first)"
        )
    check_same_version(survey, version_name)
    if survey.remaining == 0:
        return 0
    ray = _import_ray()
    code = [str(Path(package.__file__).parent) for package in (model, diplotone)]  # type: ignore[arg-type]
    # A local cluster gets a CPU slot per actor thread and one more: the read, list and write tasks take a slot
    # each, and with every slot held by an actor the pipeline would wait for ever (Ray's CPUs are slots, not cores).
    local = {"num_cpus": workers * threads + 1} if address == LOCAL else {}
    ray.init(
        address=None if address == LOCAL else address,
        **local,
        runtime_env={"py_modules": code, "excludes": CODE_EXCLUDES},
        log_to_driver=False,
    )
    try:
        # Ray Data reads small files into one block, and one block goes to one actor: blocks of about a batch's
        # bytes let every actor of the pool take part, and keep the read streaming (no repartition barrier).
        ray.data.DataContext.get_current().target_max_block_size = _bytes_per_batch(survey, batch)
        scored = ray.data.read_parquet(str(survey.input)).map_batches(
            BatchScorer,
            fn_constructor_kwargs={
                "files": version_files(version),
                "name": version.name,
                "threads": threads,
                "survey": survey,
            },
            batch_size=batch,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=threads,
        )
        survey.output.mkdir(parents=True, exist_ok=True)
        scored.write_parquet(str(survey.output))
    finally:
        ray.shutdown()
    return survey.remaining


def _bytes_per_batch(survey: Survey, batch: int) -> int:
    """About ``batch`` rows of the input, in bytes (Parquet's uncompressed sizes), at least 1 KiB."""
    import pyarrow.parquet as pq

    parts = sorted(survey.input.glob("*.parquet")) if survey.input.is_dir() else [survey.input]
    metadata = [pq.ParquetFile(part).metadata for part in parts]
    rows = sum(m.num_rows for m in metadata) or 1
    size = sum(m.row_group(i).total_byte_size for m in metadata for i in range(m.num_row_groups))
    return max(1024, int(size) * batch // int(rows))


def version_files(folder: Path) -> dict[str, bytes]:
    """A version folder's files (caches left out) by relative path: a few MB for a LoRA version."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "cache" not in path.relative_to(folder).parts
    }


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ArchiveError("--ray needs Ray: pip install 'diplotone[ray]'") from error
    return ray
