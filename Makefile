# The two entry points of the README. Both build their own virtual environment; `make test` also installs
# Debian's chromium and Slurm for the browser and real-cluster tests (skipped, with the reason, where it cannot).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup chromium slurm gpu-check

$(BIN)/autograder: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first, so no dependency pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .[test]
	touch $@

setup: $(BIN)/autograder

demo: setup
	$(BIN)/autograder release --check
	$(BIN)/autograder grade 01_intro samples/01_intro --gradebook out/demo.db
	$(BIN)/autograder export 01_intro --gradebook out/demo.db --format csv --output out/01_intro_grades.csv
	$(BIN)/autograder export 01_intro --gradebook out/demo.db --format html --output out/feedback

# The browser tests drive Debian's chromium (Playwright downloads no browser here); without it they are skipped.
chromium:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
		|| echo "chromium could not be installed: the browser tests will be skipped"

test: setup chromium slurm
	$(BIN)/python -m pytest -q -rs

# On a CUDA machine (from PyPI, torch==2.13.0 is its CUDA build): verify 04 with its GPU tests, grade every
# sample against expected.json, write the 04 CUDA snapshot, time 100 hand-ins of 04; one summary, < 8 min.
gpu-check: setup
	OUT=out/gpu_check GPU_CHECK_BUDGET_S=450 $(BIN)/python bench/gpu_check.py

# Slurm and munge (Debian, as root) for the real-cluster tests in tests/test_slurm.py; a no-op once installed.
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } || \
	  echo "Slurm could not be installed: the real-cluster tests will be skipped"
