# Lesion Review: `make demo` runs the app on synthetic demo data; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
DEMO_DIR ?= data/demo
TEST_EXTRAS := .[test,train]

# bash for pipefail: a pip failure must fail the recipe even though pip's output goes through a filter.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

# One line per step, so a newcomer sees what the first minutes are spent on.
step = @printf '\n==> %s\n' "$(1)"

# Some machines' pip configuration names extra index folders that do not exist, and pip then warns
# "Location '...' is ignored: it is neither a file nor a directory" once per package. That is about the
# machine, not this project, so exactly that warning is dropped from pip's standard error; everything
# else pip prints (its progress, other warnings, every error) stays, and pip's exit status is kept.
# setuptools' "Editable installation" note (a flat layout like ours may be shadowed by a folder of the same
# name in the working directory) is information, not a problem, and is silenced by its exact title.
PIP_MACHINE_NOISE := ^WARNING: Location '[^']*' is ignored: it is neither a file nor a directory\.$$
pip_install = { PYTHONWARNINGS='ignore:Editable installation.:UserWarning' \
	$(BIN)/python -m pip install $(1) 2>&1 1>&3 \
	| { grep --line-buffered -v -E "$(PIP_MACHINE_NOISE)" || true; } 1>&2; } 3>&1

.PHONY: demo test install install-test lint browser screenshots bench train clean help

help:
	@echo "make demo        - install, build the synthetic demo data if absent, serve http://127.0.0.1:8000"
	@echo "make test        - install and run the whole test suite (lint, unit, API, end-to-end)"
	@echo "make screenshots - regenerate docs/images/ui_*.png (installs Playwright with the test extra)"
	@echo "make bench       - run the benchmarks in bench/"
	@echo "make train       - train the demo detector on synthetic data (installs the [train] extra)"

$(VENV)/bin/python:
	$(call step,creating the virtual environment $(VENV) with $(PYTHON))
	@$(PYTHON) -m venv $(VENV)
	$(call step,upgrading pip in $(VENV))
	@$(call pip_install,--quiet --upgrade pip)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(call step,installing Lesion Review and its dependencies into $(VENV) (pip; a few minutes the first time))
	@$(call pip_install,-e .)
	@touch $(STAMP)

# The suite also checks training and the PyTorch-vs-ONNX equivalence, so it installs the [train] extra.
$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(call step,installing Lesion Review with the [test] and [train] extras into $(VENV) (pip; a few minutes the first time))
	@$(call pip_install,-e '$(TEST_EXTRAS)')
	@touch $(STAMP) $(TEST_STAMP)

install: $(STAMP)
install-test: $(TEST_STAMP)

demo: install
	$(call step,starting the demo: lesion-review demo --data-dir $(DEMO_DIR))
	@$(BIN)/lesion-review demo --data-dir $(DEMO_DIR)

# Chromium is a system package; the e2e tests say loudly when it is missing.
browser:
	@bash scripts/ensure-chromium.sh

lint: install-test
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/ruff format --check app tests bench migrations
	$(BIN)/mypy

# The suite runs on up to 4 worker processes (one per core), whole test files per worker, so session
# fixtures (imported template databases, a live server, Chromium) stay shared within a file's tests.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 4 ] && n=4; echo $$n)
PYTEST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadfile

test: install-test browser lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The screenshots drive Chromium with Playwright, which comes with the [test] extra.
screenshots: install-test browser
	$(BIN)/python -m tests.e2e.screenshots

bench: install-test
	$(BIN)/python -m bench

train: install-test
	$(BIN)/lesion-review train $(DEMO_DIR)-train --out models/lesion-detector.onnx

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
