# Two commands: `make demo` and `make test`. Both build .venv from the package registry (CPU JAX).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lattice run runs/quickstart.toml --force
	$(BIN)/lattice measure runs/quickstart

# Test processes in parallel (pytest-xdist): one per core, at most 4. `make test WORKERS=0` runs
# the suite in one process.
WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, os.cpu_count() or 1))")

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n $(WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check lattice tests benchmarks
	$(BIN)/ruff format --check lattice tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/ratios.py

clean:
	rm -rf $(VENV) build *.egg-info
