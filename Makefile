# spoofdet: the two commands a new user needs are `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test unit install install-test clean help

help:
	@echo "make demo   create .venv, install, run the demo pipeline on a generated corpus (CPU, no downloads)"
	@echo "make test   create .venv, install with test extras, run the whole suite (unit + integration)"
	@echo "make unit   unit tests only (no Ray, no MLflow, no subprocesses)"

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=/path/to/python3.11 ...'"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build on a CPU machine.
	$(BIN)/pip install -q $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH) -e ".[all]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q $(TORCH) -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/python -m ray_jobs.demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests --durations=20

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests -m "not integration"

clean:
	rm -rf $(VENV) runs .pytest_cache
