# byoserve: the verbs people type. Everything a target needs, it installs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.installed
TORCH_WHEELS ?= /opt/wheels
MODEL       ?= sentiment
PORT        ?= 8080
IMAGE       ?= byoserve
TAG         ?= latest
PYTEST_ARGS ?=

.PHONY: help install serve test test-quick lint model clean

help:
	@echo "make install     create .venv with the pinned dependencies"
	@echo "make serve       train/package the example model (MODEL=$(MODEL)) and serve it on :$(PORT)"
	@echo "make test        lint, type-check and run every test (containers included)"
	@echo "make test-quick  the same without the container tests"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --find-links $(TORCH_WHEELS) -c constraints.txt torch==2.13.0 -e '.[test]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-quick: lint
	$(VENV)/bin/pytest -m "not container" $(PYTEST_ARGS)

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
