# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Both build the virtual environment from the project's own files on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,data]"
	touch $@

demo: venv
	$(BIN)/jaxdelta demo

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python experiments/bench/bench_generate.py

clean:
	rm -rf $(VENV) build dist *.egg-info runs
