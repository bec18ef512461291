# Two commands: `make demo` and `make test`. Both build .venv from the package registry (CPU JAX).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-long lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The demo: the quickstart Langevin run and its measurement, then Langevin, HMC and the learned
# sampler (the model shipped in lattice/models/) on 8x8 near kappa_c, a sampler trained there
# from the action alone (no ensemble), all compared, with a report. About two minutes on 2
# cores once .venv exists (docs/PERFORMANCE.md).
demo: $(STAMP)
	$(BIN)/lattice run runs/quickstart.toml --force
	$(BIN)/lattice measure runs/quickstart
	$(BIN)/lattice run runs/demo/langevin.toml --force
	$(BIN)/lattice run runs/demo/hmc.toml --force
	$(BIN)/lattice run runs/demo/diffusion.toml --force
	$(BIN)/lattice train runs/demo/path_train.toml -o runs/demo/path_model --force
	$(BIN)/lattice run runs/demo/path.toml --force
	$(BIN)/lattice compare runs/demo/langevin runs/demo/hmc runs/demo/diffusion runs/demo/path --report runs/demo/report.html

# Test processes in parallel (pytest-xdist): one per core, at most 4. `make test WORKERS=0` runs
# the suite in one process.
WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, os.cpu_count() or 1))")

test: $(STAMP)
	@test -x /usr/bin/chromium || echo "hint: /usr/bin/chromium is missing, so tests/test_report_browser.py will fail; install it: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
	$(BIN)/python -m pytest -q -m "not slow and not long" -n $(WORKERS)

# The tests marked `long` (pyproject.toml): what cannot be made short without losing what it
# tests. CI runs them after `make test`.
test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m long -n $(WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check lattice tests benchmarks
	$(BIN)/ruff format --check lattice tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/ratios.py

# The API reference and the docs/ pages as a site (mkdocs.yml), offline: site/index.html.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) build *.egg-info
