# The two entry points of the README. Both build their own virtual environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup slurm

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

# Slurm and munge (Debian, as root) for the real-cluster tests in tests/test_slurm.py; a no-op once installed.
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
