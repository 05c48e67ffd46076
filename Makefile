# Two commands for a newcomer (see README):
#   make demo   set up .venv (CPU torch + mbdefense) and run the end-to-end demo
#   make test   set up .venv if needed and run the test suite
#   make lint   ruff lint + format check + mypy (mbdata, mbtrain, cli), as CI runs them
#   make lock   re-resolve the dependencies (pyproject ranges) and rewrite constraints.txt
#
# setup installs exactly the versions in constraints.txt (the tested set; pyproject.toml keeps the
# ranges for `pip install mbdefense`). To move to newer libraries: `make lock`, run `make test`
# and `make demo-check`, commit constraints.txt with the figures.
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
LOCK := constraints.txt

.PHONY: setup demo demo-check test lint typecheck lock clean

$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) "$(TORCH)"
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev]'
	$(BIN)/pip check
	touch $@
	@echo "mb is installed in $(VENV): run 'source $(VENV)/bin/activate' (or call $(BIN)/mb)"

setup: $(BIN)/.installed

demo: setup
	$(BIN)/mb demo -o runs/demo --overwrite

# The demo, then its table against the bounds the README states (bench/demo_bounds.json): CI runs this.
demo-check: demo
	$(BIN)/python bench/demo_check.py runs/demo/report.json

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# mypy alone (also part of `make lint`); settings in pyproject.toml [tool.mypy].
typecheck: setup
	$(BIN)/mypy

# Resolve pyproject's ranges afresh in a scratch venv and pin the result (torch's local +cpu tag is
# dropped: `torch==X` matches the CPU wheel and the CUDA one alike).
lock:
	rm -rf .lock-venv
	$(PY) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q "$(TORCH)"
	.lock-venv/bin/pip install -q '.[dev]'
	( echo "# The tested dependency set: make setup installs exactly these (pip -c). Regenerate: make lock"; \
	  echo "# Made by 'make lock' on $$(uname -m) Linux, Python $$(.lock-venv/bin/python -c 'import platform;print(platform.python_version())')."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v -i '^mbdefense' | sed 's/+cpu$$//' ) > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf runs .pytest_cache .hypothesis
