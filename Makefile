# The two commands of the README: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv and install what is missing; running them again installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint devices bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and \
		"hil needs Python 3.11 or later; $(PYTHON) is " + sys.version.split()[0] + ": give one: make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hil run experiments/optical_pat_digits.yaml

test: $(STAMP)
	$(BIN)/pytest -q
	$(BIN)/ruff check .

devices: $(STAMP)
	$(BIN)/hil devices

bench: $(STAMP)
	$(BIN)/python benchmarks/simulators.py
	$(BIN)/python benchmarks/mismatch.py
	$(BIN)/python benchmarks/transports.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
