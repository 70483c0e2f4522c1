# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint bench clean services

$(BIN)/trackyard: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: $(BIN)/trackyard
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: $(BIN)/trackyard
	$(BIN)/trackyard serve

services: $(VENV)/.dev
	scripts/ensure-test-services.sh

test: $(VENV)/.dev services
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# Ingest benchmark (docs/performance.md). Flags: make bench BENCH_ARGS="--seconds 10 --reps 3 --postgres URL"
bench: $(BIN)/trackyard
	command -v wrk >/dev/null || apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) tests/js/node_modules .pytest_cache
