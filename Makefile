# The two entry points of the README. Both build their own virtual environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup slurm gpu-check

$(BIN)/autograder: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first, so no dependency pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

setup: $(BIN)/autograder

demo: setup
	$(BIN)/autograder release --check
	$(BIN)/autograder grade 01_intro samples/01_intro --gradebook out/demo.db
	$(BIN)/autograder export 01_intro --gradebook out/demo.db --format csv --output out/01_intro_grades.csv
	$(BIN)/autograder export 01_intro --gradebook out/demo.db --format html --output out/feedback

test: setup
	$(BIN)/python -m pytest -q

# On a CUDA machine (from PyPI, torch==2.13.0 is its CUDA build): verify 04 with its GPU tests, grade every
# sample against expected.json, write the 04 CUDA snapshot, time 100 hand-ins of 04; one summary, < 8 min.
gpu-check: setup
	OUT=out/gpu_check GPU_CHECK_BUDGET_S=450 $(BIN)/python bench/gpu_check.py

# Slurm and munge (Debian, as root) for the real-cluster tests in tests/test_slurm.py; a no-op once installed.
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
