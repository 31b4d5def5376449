# raw2ready — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
PYTEST_ARGS ?=
# Test processes: more than the 2 cores, because most of the suite's wall time is waiting (raw2ready subprocesses,
# RabbitMQ nodes starting, moto servers, workers idling out); 4 overlap those waits (issue 16: 2 → 4 workers
# took the full suite from 482 s to 391 s on the 2-core VM, same tests).
TEST_WORKERS ?= 4

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@bash .ci/find-python >/dev/null
	@test -x $(PY) || $$(bash .ci/find-python) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,workflows,serve]'
	@echo "compiling the s2cloudless model for this CPU (once per machine, ~2 min; cached in ~/.cache/raw2ready)"
	$(VENV)/bin/raw2ready -q cloud-model
	@touch $(STAMP)

setup: $(STAMP) ## create .venv (Python 3.12) and install raw2ready with the extras the tests use

# The bench extra (xarray, netCDF4: bench_edr's baselines) only for `make bench`: xarray brings pandas, which
# LightGBM and lleaves import whenever it is installed (~0.5-1 s in every mask step, worker and test process).
# The images do not carry it either.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	@touch $(BENCH_STAMP)

demo: $(STAMP) ## synthesize a small archive offline and process it into ./raw2ready-demo
	$(VENV)/bin/raw2ready demo --dir raw2ready-demo

test: $(STAMP) ## run the test suite (services: RabbitMQ on 127.0.0.1:5672; S3 via moto is started by the tests)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP) ## the suite without tests marked slow
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check steps workflows synthesizer tests bench tools images
	$(VENV)/bin/mypy

render: $(STAMP) ## regenerate manifests/base/generated from the step contracts (Hera)
	$(VENV)/bin/raw2ready render --out manifests/base

bench: $(BENCH_STAMP) ## run the benchmarks (full-size tiles; minutes)
	$(PY) bench/run_all.py

lock: $(STAMP) ## regenerate the images' hash-pinned lock files (images/*/requirements.lock; uv, needs PyPI)
	$(PY) images/lock.py

soak: $(STAMP) ## the full queue soak at Thailand scale (~30 min on 2 cores; result: docs/SOAK.md)
	$(PY) bench/soak_queue.py --full

clean: ## remove the demo output and caches (keeps .venv)
	rm -rf raw2ready-demo .pytest_cache .mypy_cache .ruff_cache

.PHONY: help setup demo test test-fast lint render bench lock clean
