# Sluice: `make run` starts everything, `make test` runs every test. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint kafka jars clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

jars: $(STAMP)
	$(BIN)/python -c "from sluice.localkafka import ensure_jars; ensure_jars()"

run: $(STAMP) jars
	$(BIN)/sluice run

kafka: $(STAMP) jars
	$(BIN)/sluice kafka

test: $(STAMP) jars
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .sluice .pytest_cache .mypy_cache .ruff_cache
