# Every target builds its own virtual environment from nothing: a fresh machine needs only
# python3 (>= 3.11) and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: test lint demo bench format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,torch]'
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,torch,bench]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff format --check asyncfeed tests benchmarks examples
	$(BIN)/ruff check asyncfeed tests benchmarks examples
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python -m asyncfeed demo

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks

format: $(STAMP)
	$(BIN)/ruff format asyncfeed tests benchmarks examples
	$(BIN)/ruff check --fix asyncfeed tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
