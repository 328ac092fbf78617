# Lesion Review: `make demo` runs the app on synthetic demo data; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
DEMO_DIR ?= data/demo

.PHONY: demo test install install-test lint browser bench train clean help

help:
	@echo "make demo   - install, build the synthetic demo data if absent, serve http://127.0.0.1:8000"
	@echo "make test   - install and run the whole test suite (lint, unit, API, end-to-end)"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make train  - train the demo detector on synthetic data (installs the [train] extra)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

# The suite also checks training and the PyTorch-vs-ONNX equivalence, so it installs the [train] extra.
$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test,train]'
	touch $(STAMP) $(TEST_STAMP)

install: $(STAMP)
install-test: $(TEST_STAMP)

demo: install
	$(BIN)/lesion-review demo --data-dir $(DEMO_DIR)

# Chromium is a system package; the e2e tests say loudly when it is missing.
browser:
	@bash scripts/ensure-chromium.sh

lint: install-test
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/ruff format --check app tests bench migrations
	$(BIN)/mypy

test: install-test browser lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python -m bench

train: install-test
	$(BIN)/lesion-review train $(DEMO_DIR)-train --out models/lesion-detector.onnx

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
