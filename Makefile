# Every target builds its own virtual environment from nothing: a fresh machine needs only
# python3 (>= 3.11) and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed-dev

# Lint what exists (examples/ arrives with the HTTP fetchers).
LINT_DIRS := $(wildcard asyncfeed tests benchmarks examples)

.PHONY: test lint demo bench format clean

# The demo needs the library and torch (its --device path) and the Prometheus client.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[torch,metrics]'
	touch $@

# Tests and benchmarks: every extra (Ray, OpenTelemetry) and the peers the like-for-like
# benchmarks run (torchdata, SPDL), so the tests of those rows run too.
$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,torch,metrics,otel,ray,bench]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

demo: $(RUN_STAMP)
	$(BIN)/python -m asyncfeed demo

# Writes benchmarks/results/runs/<timestamp>/ (git-ignored). make bench BENCH_ARGS=--quick for
# a smoke run; BENCH_ARGS=--update-results also replaces the committed results/latest.* and
# http.png (never with --quick); see python -m benchmarks --help.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

format: $(STAMP)
	$(BIN)/ruff format $(LINT_DIRS)
	$(BIN)/ruff check --fix $(LINT_DIRS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
