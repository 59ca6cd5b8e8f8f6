# The two entry points of the README. Both build their own virtual environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup chromium

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

test: setup chromium
	$(BIN)/python -m pytest -q -rs
