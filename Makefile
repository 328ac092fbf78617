# Lesion Review: `make demo` runs the app on synthetic demo data; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= data/demo

.PHONY: demo test install lint browser bench train clean help

help:
	@echo "make demo   - install, build the synthetic demo data if absent, serve http://127.0.0.1:8000"
	@echo "make test   - install and run the whole test suite (lint, unit, API, end-to-end)"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make train  - train the demo detector on synthetic data (installs the [train] extra)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lesion-review demo --data-dir $(DEMO_DIR)

# Chromium is a system package; the e2e tests say loudly when it is missing.
browser:
	@bash scripts/ensure-chromium.sh

lint: install
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/mypy

test: install browser lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

train: install
	$(BIN)/python -m pip install --quiet -e '.[train,test]'
	$(BIN)/lesion-review train $(DEMO_DIR)-train --out models/lesion-detector.onnx

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
