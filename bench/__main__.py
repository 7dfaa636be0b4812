"""``python -m bench`` (``make bench``): measure, then write bench/results/latest.json and latest.md.

python -m bench                       # every section on the shipped model (about 20 minutes on 2 cores)
python -m bench --quick               # a smoke run of a few seconds a phase: checks the machinery, not speed
python -m bench --only service         # one section (several --only allowed): the report says which ran
python -m bench --version DIR --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report import write
from bench.run import FULL, QUICK, SECTIONS, run, sections_of
from bench.texts import CORPUS
from model.registry import SHIPPED

RESULTS = Path(__file__).resolve().parent / "results"


def shipped_version() -> Path:
    """The newest version in model/shipped (the one a fresh service activates)."""
    folders = sorted(p for p in SHIPPED.iterdir() if (p / "manifest.json").is_file()) if SHIPPED.is_dir() else []
    if not folders:
        raise SystemExit(f"no model version in {SHIPPED}; train one with `diplotone train --ship` or pass --version")
    return folders[-1]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short phases, figures not meaningful")
    parser.add_argument("--version", type=Path, help="model version folder (default: the newest in model/shipped)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="messages.jsonl whose test split makes the texts")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}; engines brings compute along",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json and latest.md go")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    version = args.version or shipped_version()
    if not (version / "manifest.json").is_file():
        raise SystemExit(f"--version: expected a model version folder with a manifest.json; found {version}")
    if not args.corpus.is_file():
        raise SystemExit(f"--corpus: expected a messages.jsonl file; found no file at {args.corpus}")
    plan = QUICK if args.quick else FULL
    command = " ".join(["python -m bench", *argv])
    results = run(plan, version.resolve(), args.corpus.resolve(), command, sections_of(args.only))
    json_path, md_path = write(results, args.out)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
