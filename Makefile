# `make run` and `make test` set everything up on a fresh machine (Python 3.11 and pip are all they need).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
# Rebuilt when the project's dependencies change.
DEPS   := pyproject.toml constraints.txt
# test workers (pytest-xdist): the end-to-end tests wait on subprocesses, SLURM and timers, so 3 fill 2 cores (the
# in-process fast tier: 2); a file's tests share a worker (the SLURM tests one cluster). 0: one by one, in-process.
TEST_WORKERS ?= 3
FAST_WORKERS ?= 2
xdist   = $(if $(filter 0,$(1)),,-n $(1) --dist loadfile)

.PHONY: run test test-fast bench smoke clean help
help:
	@echo "make run       - set up .venv and train the tutorial's experiment (1.2M env steps)"
	@echo "make test      - set up .venv with the dev extras and run the whole test suite (what CI runs)"
	@echo "make test-fast - the in-process tier of the suite: unit, config and bad-input tests (under a minute)"
	@echo "make bench     - throughput, update cost, time to solve (beside SB3); writes bench_results/"
	@echo "make smoke     - a few seconds of training through every code path"
	@echo "make clean     - remove .venv, outputs/, multirun/ and pytest's cache"

$(VENV)/.ok-base: $(DEPS)
	@[ -x $(PY) ] && $(PY) -c "import sys" 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade "pip>=23.2"
	$(PY) -m pip install -q -c constraints.txt -e .
	@touch $@

$(VENV)/.ok-dev: $(VENV)/.ok-base
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

# the bench also measures the optional envpool backend, Stable-Baselines3 side by side and the MuJoCo suite
$(VENV)/.ok-bench: $(VENV)/.ok-base
	$(PY) -m pip install -q -c constraints.txt -e '.[envpool,sb3,mujoco]'
	@touch $@

run: $(VENV)/.ok-base
	$(PY) launch.py $(ARGS)

smoke: $(VENV)/.ok-base
	$(PY) launch.py experiment=smoke run_dir=outputs/smoke $(ARGS)

# MuJoCo's test videos render through Mesa's EGL: installed when missing (as root; scripts/gl_libs.sh)
test: $(VENV)/.ok-dev
	@bash scripts/gl_libs.sh
	$(PY) -m pytest $(call xdist,$(TEST_WORKERS)) $(ARGS)

test-fast: $(VENV)/.ok-dev
	$(PY) -m pytest $(call xdist,$(FAST_WORKERS)) -m "not slow" $(ARGS)

bench: $(VENV)/.ok-bench
	$(PY) scripts/bench.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
