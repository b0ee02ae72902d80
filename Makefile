# cloudnic — the two commands are `make demo` and `make test`; both set up what they need.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
CNI_BIN_DIR ?= /opt/cni/bin
DESTDIR ?=
PYTEST_ARGS ?=

.PHONY: all deps venv shim test lint unit functional e2e demo bench torture install uninstall clean

all: venv shim

deps:
	scripts/install-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

shim:
	$(MAKE) -C shim

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The README's test command: everything this machine can run (unit, functional, e2e).
test: deps venv shim lint
	scripts/e2e-setup.sh
	$(VENV)/bin/pytest $(PYTEST_ARGS)

unit: venv
	$(VENV)/bin/pytest -m "not functional and not e2e and not neutron" $(PYTEST_ARGS)

functional: deps venv shim
	$(VENV)/bin/pytest -m functional $(PYTEST_ARGS)

e2e: deps venv shim
	scripts/e2e-setup.sh
	$(VENV)/bin/pytest -m e2e $(PYTEST_ARGS)

demo: deps venv shim
	$(VENV)/bin/cloudnic demo --shim shim/build/cloudnic

# Benchmarks against the Go reference plugins (issue 4): writes bench/results/latest.{json,md}
bench: deps venv shim
	scripts/bench-setup.sh
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# Crash safety, faults and hostile input (issue 5): writes bench/results/torture.{json,md}; up to ~20 min
torture: deps venv shim
	scripts/e2e-setup.sh
	$(VENV)/bin/python -m bench.torture $(TORTURE_ARGS)

install: shim
	DESTDIR="$(DESTDIR)" CNI_BIN_DIR="$(CNI_BIN_DIR)" PY="$(PY)" scripts/install.sh

uninstall:
	DESTDIR="$(DESTDIR)" scripts/uninstall.sh

clean:
	$(MAKE) -C shim clean
	rm -rf build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
