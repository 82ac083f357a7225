# Quick start targets. Each sets itself up (virtual environment, compiled kernel)
# and is safe to run again: the install step reruns only when the build inputs change.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.itb-installed
BUILD_INPUTS := pyproject.toml setup.py $(wildcard cython_ext/*.pyx cython_ext/*.pxd sim/*.pyx)

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python $(BUILD_INPUTS)
	$(BIN)/python -m pip install --quiet -e '.[test,interop]'
	touch $@

run: $(STAMP)
	$(BIN)/itb run

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/itb bench all --json

clean:
	rm -rf $(VENV) build *.egg-info cython_ext/*.so cython_ext/*.c sim/*.so sim/*.c
