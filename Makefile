# The two commands a newcomer needs: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test lint typecheck unit install clean binary system-deps test-assets native

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The proxy's hot path compiled with mypyc into gateway/_native/ (gateway/native.py): about
## 30 s the first time, a no-op while the sources match. Without a C compiler the gateway
## runs as pure Python, the same code, slower (GATEWAY_REQUIRE_NATIVE=1 makes that an error).
native: $(STAMP)
	$(BIN)/gateway native build

## Install and run the gateway on its embedded default (local processes, no Docker).
run: $(STAMP) native
	$(BIN)/gateway serve

## Install and run the whole test suite: system packages (when root), the tenant image and the
## single-file build the tests use, then lint, type check and pytest.
test: $(STAMP) system-deps test-assets native lint typecheck unit

system-deps:
	scripts/system-deps.sh

## Built once and reused: the docker tests find the image (a build whose tag exists is skipped),
## tests/test_binary.py smoke-tests build/gateway.pyz. A failure here is reported by those tests.
test-assets: $(STAMP)
	-@if docker info >/dev/null 2>&1; then $(BIN)/gateway image build; \
	  else echo "no Docker engine: the docker tests will skip (or fail under CI)"; fi
	-@$(MAKE) --no-print-directory binary

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## One process by default: two xdist workers (PYTEST_XDIST="-n 2 --dist loadgroup"; CI has 2
## cores) are ready (tests/conftest.py keeps the Docker, Chromium and load tests each on one
## worker, one at a time) but no whole run has been proved free of flakes that way yet.
PYTEST_XDIST ?=
unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache gateway/_native

## One executable running the whole gateway: a shiv zipapp of this platform's wheels
## (uvloop, httptools, argon2, cryptography compiled for it). Needs python3.11 on the target.
## -E puts the zipapp on PYTHONPATH for subprocesses: team Datasettes start from it too.
BINARY = build/gateway.pyz
binary: $(BINARY)

$(BINARY): $(STAMP) pyproject.toml $(shell find gateway -type f -not -name '*.pyc' -not -path 'gateway/_native*')
	-$(BIN)/gateway native build   # into the wheel when it can be built (pure Python otherwise)
	mkdir -p build
	rm -rf build/shiv-src build/lib && mkdir -p build/shiv-src
	$(BIN)/pip wheel -q --no-deps -w build/shiv-src .
	$(BIN)/shiv -q -c gateway -E --compressed -p '/usr/bin/env python3.11' \
		-o $(BINARY).tmp build/shiv-src/gateway-*.whl
	mv $(BINARY).tmp $(BINARY)
