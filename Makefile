# Two commands do all set-up (see README):  make run   |   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: venv run test test-fast repro lint bench clean

# The venv is built in place and marked complete only at the end, so an interrupted
# build is rebuilt rather than trusted. torch goes first, pinned by constraints.txt,
# so a CPU-only machine gets the CPU build (an unpinned torch pulls a multi-GB CUDA build).
$(VENV)/.complete: pyproject.toml constraints.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.complete

run: venv
	$(BIN)/crfm-bench run $(ARGS)

test: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# The whole DVC pipeline (dvc.yaml) with the environment's tools on PATH.
repro: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro $(ARGS)

lint: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# Measurements, not tests (see docs/performance.md). roofline.py: training step of every
# learned model against a bare conv3d, the levers, sliding-window cost, scale on paper
# (runs/bench/roofline.json); ROOFLINE_ARGS="--quick" or "--models crfm,edsr" to shorten it.
ROOFLINE_ARGS ?=
bench: venv
	$(BIN)/python benchmarks/degrade.py
	$(BIN)/python benchmarks/models.py --quick
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/roofline.py $(ROOFLINE_ARGS)

clean:
	rm -rf $(VENV)
