# The README's two commands: `make demo` (the main job) and `make test` (the CPU test suite).
# Both build .venv from scratch on a fresh machine; the stamp files make reruns instant.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench-doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[radio]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[radio,graph,dev]'
	touch $@ $(VENV)/.installed

# The main job: simulate a 13 s, 512-channel observation with bursts, a pulsar and RFI, search it
# (GPU when usable), and write demo-out/search/report.html. About 30 s on a 2-core CPU.
demo: $(VENV)/.installed
	$(BIN)/cudalab doctor
	$(BIN)/cudalab radio demo --out demo-out

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench-doctor: $(VENV)/.installed
	$(BIN)/python benchmarks/doctor_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
