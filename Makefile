# `make run` and `make test` set everything up on a fresh machine (Python 3.11 and pip are all they need).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
# Rebuilt when the project's dependencies change.
DEPS   := pyproject.toml constraints.txt

.PHONY: run test bench smoke clean help
help:
	@echo "make run    - set up .venv and train the tutorial's experiment (1.2M env steps)"
	@echo "make test   - set up .venv with the dev extras and run the test suite"
	@echo "make bench  - throughput, update cost, time to solve (beside SB3); writes bench_results/"
	@echo "make smoke  - a few seconds of training through every code path"

$(VENV)/.ok-base: $(DEPS)
	@[ -x $(PY) ] && $(PY) -c "import sys" 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade "pip>=23.2"
	$(PY) -m pip install -q -c constraints.txt -e .
	@touch $@

$(VENV)/.ok-dev: $(VENV)/.ok-base
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

# the bench also measures the optional envpool backend and Stable-Baselines3 side by side
$(VENV)/.ok-bench: $(VENV)/.ok-base
	$(PY) -m pip install -q -c constraints.txt -e '.[envpool,sb3]'
	@touch $@

run: $(VENV)/.ok-base
	$(PY) launch.py $(ARGS)

smoke: $(VENV)/.ok-base
	$(PY) launch.py experiment=smoke run_dir=outputs/smoke $(ARGS)

test: $(VENV)/.ok-dev
	$(PY) -m pytest $(ARGS)

bench: $(VENV)/.ok-bench
	$(PY) scripts/bench.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
