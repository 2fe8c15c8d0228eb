# Two commands do all set-up (see README):  make run   |   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: venv run test test-fast repro lint bench screenshot chromium clean

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

# The suite on TEST_WORKERS pytest-xdist processes: one test alone leaves a core idle while it
# waits on Ray start-up, DVC or a server; two keep about 1.8 of 2 cores busy (measured with
# benchmarks/pytest_cpu.py). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup
test: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(PYTEST) $(ARGS)

test-fast: venv
	$(PYTEST) -m "not slow" $(ARGS)

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

# docs/mlflow-leaderboard.png: the MLflow UI's runs table of the finished `make run` (its
# ./mlflow.db), sorted by test PSNR, shot by headless Chromium (Debian's `chromium`,
# installed here if missing). SHOT_ARGS: e.g. "--backend-store-uri sqlite:///path/mlflow.db"
# or "--experiment NAME" (default: the newest experiment with a benchmark run).
SHOT_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
chromium:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium with apt-get"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium; }
	@test -x $(CHROMIUM) || { echo "error: $(CHROMIUM) missing after apt-get install chromium"; exit 2; }

screenshot: venv chromium
	$(BIN)/python docs/screenshot.py --chromium $(CHROMIUM) --mlflow $(BIN)/mlflow $(SHOT_ARGS)

clean:
	rm -rf $(VENV)
