# canalflow developer entry points.  `make test` is what CI runs (through .ci/run).
#
#   make deps    Debian packages (mosquitto, influxdb, CJK font, poppler), only when missing
#   make venv    .venv with `pip install -e .[dev]`, redone only when pyproject.toml changes
#   make test    deps + venv + ruff + pytest (real mosquitto and influxd on free ports)
#   make lint    ruff
#   make demo    the end-to-end demo into ./out
#   make bench   benchmarks
#   make e2e     the full season under faults (docs/proof.md) and the whole demo against truth (tests/demo; minutes)
#   make clean   build/test leftovers and ./out (keeps .venv; `make distclean` removes it too)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.canalflow-installed

.PHONY: help deps venv test lint demo bench e2e clean distclean

help:
	@sed -n 's/^#   //p' Makefile

deps:
	scripts/install-system-deps.sh

venv: $(STAMP)

# deps is order-only: it runs first (python3-venv may be missing) but never forces a reinstall.
$(STAMP): pyproject.toml | deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -e '.[dev]'
	touch $@

test: deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .

demo: deps venv
	$(BIN)/canalflow demo --out out

bench: deps venv
	$(BIN)/python -m benchmarks

e2e: deps venv
	$(BIN)/pytest -q -m e2e tests/proof tests/demo

clean:
	rm -rf out build dist .pytest_cache .ruff_cache .hypothesis *.egg-info $(STAMP)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
