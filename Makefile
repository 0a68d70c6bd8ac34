# spoofdet: the two commands a new user needs are `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
# pip compiles bytecode one file at a time; installing with --no-compile and then compiling on all
# cores (compileall -j0) halves the install on 2 cores. Bytecode must exist up front: with
# PYTHONDONTWRITEBYTECODE set (as on CI) every Ray worker would otherwise recompile torch on import.
PIP := $(BIN)/pip install -q --no-compile
# a few third-party files (py2-era tests, templates) do not compile; that is not an install failure
COMPILE := $(BIN)/python -m compileall -qq -j0 $(VENV)/lib || true

.PHONY: demo test unit lint install install-test clean help

help:
	@echo "make demo   create .venv, install, run the demo pipeline on a generated corpus (CPU, no downloads)"
	@echo "make test   create .venv, install with test extras, run the whole suite (unit + integration)"
	@echo "make unit   unit tests only (no Ray, no MLflow, no subprocesses); plain pytest does the same"
	@echo "make lint   ruff format --check and ruff check (make test runs it first)"

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=/path/to/python3.11 ...'"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build on a CPU machine.
	$(PIP) $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) $(TORCH) -e ".[all]"
	$(COMPILE)
	touch $@

# the test extra includes [all]: one resolver run, and it also satisfies `make demo`
$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(PIP) $(TORCH) -e ".[test]"
	$(COMPILE)
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/python -m ray_jobs.demo

test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest tests -m "" --durations=20

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests

lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
