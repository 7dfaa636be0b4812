# diplotone: the targets a newcomer and CI use. `make setup` once, then any other target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup run test test-all check lint types train evaluate bench bench-archive clean audit postgres fuzz soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python  ## make .venv with the package (editable), the dev tools and Ray (score-archive --ray)
	$(BIN)/pip install --quiet -e '.[dev,ray]'

run: setup  ## serve on 127.0.0.1:8000 with the embedded defaults (SQLite, the shipped model)
	$(BIN)/diplotone serve --host 127.0.0.1 --port 8000

test: setup  ## the fast suite (tiny models, offline)
	$(BIN)/pytest -m "not slow"

fuzz: setup  ## schemathesis against the app's OpenAPI alone (also part of the fast suite)
	$(BIN)/pytest -m fuzz

test-all:  ## everything, the slow tests on the real MiniLM weights included (offline)
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types:
	$(BIN)/mypy

check: setup lint types test-all  ## setup, then lint + types + every test: what CI runs

train:  ## retrain the shipped default model from training/data/ (about 20 minutes on 2 cores, corpus v3)
	$(BIN)/diplotone train --ship

evaluate:  ## the active model beside the baselines on the test split
	$(BIN)/diplotone evaluate

bench:  ## speed and memory, side by side in one run (bench/results/); one section: make bench ARGS="--only service"
	$(BIN)/python -m bench $(ARGS)
	$(MAKE) bench-archive

# --- archive scoring (issue 14) ---
bench-archive:  ## score-archive: messages/s locally and on Ray with 1 and 2 workers (bench/results/archive.*)
	$(BIN)/python -m bench.archive

# --- reliability (issue 13) -------------------------------------------------------------------------------------
audit:  ## known vulnerabilities of every installed package (pip-audit); fails if any package could not be audited
	$(BIN)/pip-audit --skip-editable $(AUDIT_STRICT) --progress-spinner off $(foreach id,$(AUDIT_IGNORED),--ignore-vuln $(id))

# CI's network reaches the package index but not PyPI's JSON API, where pip-audit reads vulnerabilities; there it
# runs without --strict: any vulnerability found still fails the run, and each package it could not audit is listed.
AUDIT_STRICT ?= --strict

AUDIT_IGNORED :=  # vulnerability ids judged not to apply, each with its reason in RELIABILITY.md

soak:  ## 5 minutes of scoring, writes and reads at 80% of the highest rate: 0 errors, RSS growth < 10% (bench/results/soak.*)
	$(BIN)/python -m bench.soak $(ARGS)

postgres:  ## start a local PostgreSQL for the tests under var/postgres and print the variable to export
	@echo "export DIPLOTONE_TEST_POSTGRES_URL=$$($(BIN)/python -m tests.postgres start $(CURDIR)/var/postgres)"
# --- end reliability ----------------------------------------------------------------------------------------------

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
