# The two commands for a fresh machine: `make serve` and `make test`.
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench clean

# setup.py compiles the modules of engine/_native.py's COMPILED (mypyc): an edit to one rebuilds
COMPILED := optable tape ops slices session backprop optimizers programs
$(BIN)/.installed: pyproject.toml setup.py $(COMPILED:%=engine/%.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/gradserve serve --host $(HOST) --port $(PORT) --data-dir data

# the suite runs twice: on the compiled engine, and on its Python sources (what installs without a compiler)
test: $(BIN)/.installed
	@$(BIN)/python -c 'import gradserve.engine as e; print("gradserve engine:", e.NATIVE)'
	$(BIN)/python -m pytest -q
	GRADSERVE_PURE=1 $(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check engine client server tests bench examples
	$(BIN)/ruff format --check engine client server tests bench examples
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis build engine/*.so engine/_native.json
