# Two commands for a newcomer (see README):
#   make demo   set up .venv (CPU torch + mbdefense) and run the end-to-end demo
#   make test   set up .venv if needed and run the test suite
#   make lint   ruff lint + format check + mypy (mbdata, mbtrain, cli), as CI runs them
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@
	@echo "mb is installed in $(VENV): run 'source $(VENV)/bin/activate' (or call $(BIN)/mb)"

setup: $(BIN)/.installed

demo: setup
	$(BIN)/mb demo -o runs/demo --overwrite

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# mypy alone (also part of `make lint`); settings in pyproject.toml [tool.mypy].
typecheck: setup
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache .hypothesis
