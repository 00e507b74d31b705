# Helium — one entry point for people and CI.
#   make demo   set up, start a local grid, train a model from the notebook, stop the grid
#   make test   set up, then run every test (Rust and Python)
#   make up / make down   start / stop the local grid alone (prints the NATS URL)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
# The cargo target dir lives outside the checkout so that CI's fresh clone reuses the build.
CARGO_TARGET_DIR ?= $(HOME)/.cache/helium/target
export CARGO_TARGET_DIR
# One optimized build serves the demo, the grid, the benchmarks and the tests (Cargo.toml).
CARGO_PROFILE := --release
BIN_DIR := $(CARGO_TARGET_DIR)/release
# tch links the libtorch of the venv's torch wheel (DESIGN §10). torch-sys only checks that
# LIBTORCH_USE_PYTORCH is set, but re-runs its build script when the value changes: giving it
# the venv's path makes a checkout elsewhere (CI's clone) relink against its own venv instead
# of a cached build pointing at another checkout's.
CARGO_ENV := PATH="$(VENV)/bin:$$PATH" LIBTORCH_USE_PYTORCH="$(VENV)"
STAMP := $(VENV)/.helium-stamp
# The official nats CLI (operators' tool; the ops tests drive it with a credential), pinned.
NATS_CLI := $(CURDIR)/.helium/bin/nats
NATS_CLI_VERSION := v0.5.0

# The worker's wheel (`pip install` it: `helium-worker` on PATH, torch as its dependency).
WHEEL_DIR := $(CURDIR)/.helium/wheels

.PHONY: help venv nats-cli build wheel test test-rust test-python demo demo-owner up down jupyter bench sim soak clean

help:
	@echo "make demo   # local grid + notebook training end to end"
	@echo "make test   # every test, Rust and Python"
	@echo "make demo-owner       # the GPU owner's notebook: rent out, earn, spend on a sweep"
	@echo "make up / make down   # the local grid alone"
	@echo "make wheel            # the worker's wheel, in .helium/wheels (pip install it anywhere)"
	@echo "make jupyter          # JupyterLab on notebooks/, against the grid of make up"
	@echo "make bench            # auctions/s, ledger transfers/s, grid vs plain PyTorch, artifact MB/s"
	@echo "make sim SEEDS=100000 # the deterministic simulator over many seeds (SEED=n replays one)"
	@echo "make soak JOBS=50 FAULTS=20 # random kills over real processes (SEED=n replays a schedule)"

$(STAMP): requirements-dev.txt client-py/pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "need Python 3.11 (python3.11 or python3 on PATH)"; exit 1; }
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -r requirements-dev.txt -e client-py
	touch $@

venv: $(STAMP)

$(NATS_CLI):
	@command -v go >/dev/null || { echo "need Go (for the pinned nats CLI)"; exit 1; }
	GOBIN=$(CURDIR)/.helium/bin go install github.com/nats-io/natscli/nats@$(NATS_CLI_VERSION)

nats-cli: $(NATS_CLI)

build: venv $(NATS_CLI)
	@command -v cargo >/dev/null || { echo "need a Rust toolchain (rustup)"; exit 1; }
	$(CARGO_ENV) cargo build $(CARGO_PROFILE) --workspace --all-targets

# maturin builds helium-worker through cargo in the same target dir and release profile, then
# zips it as the wheel's script. No auditwheel repair: libtorch is not bundled (it is not
# manylinux-clean), the torch wheel brings it and the binary's relative rpath finds it.
wheel: venv
	@command -v cargo >/dev/null || { echo "need a Rust toolchain (rustup)"; exit 1; }
	$(CARGO_ENV) $(VENV)/bin/maturin build --quiet --manifest-path worker-actors/Cargo.toml \
	  --out $(WHEEL_DIR) --auditwheel skip

test: build wheel
	$(MAKE) --no-print-directory test-rust test-python

test-rust:
	$(CARGO_ENV) cargo test $(CARGO_PROFILE) --workspace

# The job core's deterministic simulator (broker-actors/src/sim): SEEDS seeds from FIRST, or
# replay one failing seed with SEED=n. CI runs 1,000 seeds inside test-rust.
SEEDS ?= 10000
FIRST ?= 1
sim:
	$(CARGO_ENV) cargo run $(CARGO_PROFILE) -q -p helium-broker-actors --example simulate -- $(if $(SEED),--seed $(SEED),--seeds $(SEEDS) --first $(FIRST))

# The randomized soak over real processes (tests/e2e/test_soak.py) at a chosen size; CI runs
# it at 10 jobs and 5 faults inside test-python.
JOBS ?= 50
FAULTS ?= 20
soak: build
	HELIUM_BIN_DIR=$(BIN_DIR) HELIUM_REQUIRE_BINARIES=1 HELIUM_SOAK_JOBS=$(JOBS) HELIUM_SOAK_FAULTS=$(FAULTS) \
	  HELIUM_SOAK_SECONDS=$$(( 60 + 20 * $(JOBS) )) $(if $(SEED),HELIUM_SOAK_SEED=$(SEED)) \
	  $(VENV)/bin/python -m pytest -q -s tests/e2e/test_soak.py

test-python:
	HELIUM_BIN_DIR=$(BIN_DIR) HELIUM_REQUIRE_BINARIES=1 HELIUM_NATS_CLI=$(NATS_CLI) HELIUM_WHEEL_DIR=$(WHEEL_DIR) \
	  $(VENV)/bin/python -m pytest -q

demo: build
	HELIUM_BIN_DIR=$(BIN_DIR) deploy/demo.sh

# The GPU owner's notebook on the local grid: start a worker, earn, spend on a sweep, break even.
demo-owner: build
	HELIUM_BIN_DIR=$(BIN_DIR) deploy/demo.sh notebooks/gpu_owner.ipynb

up: build
	HELIUM_BIN_DIR=$(BIN_DIR) deploy/grid.sh up

down:
	deploy/grid.sh down

# JupyterLab on the notebooks, pointed at the grid that `make up` started.
jupyter: venv
	@[ -f .helium/grid/env ] || { echo "start the grid first: make up"; exit 1; }
	source .helium/grid/env && HELIUM_NATS_URL=$$HELIUM_NATS_URL HELIUM_CREDS_DIR=$$HELIUM_CREDS_DIR HELIUM_BIN_DIR=$$HELIUM_BIN_DIR $(VENV)/bin/jupyter lab \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/  # JupyterLab refuses root without it

clean: down
	rm -rf .helium $(VENV)

# Benchmarks, each a ratio or rate measured side by side in one run (docs/BENCHMARKS.md):
# the broker's auctions and ledger in-process over a real nats-server, then a local grid for
# training (grid vs plain PyTorch, submit -> start latency) and artifact throughput vs a raw copy.
bench: build
	$(CARGO_ENV) cargo run $(CARGO_PROFILE) -q -p helium-broker-actors --example broker_bench -- auctions
	$(CARGO_ENV) cargo run $(CARGO_PROFILE) -q -p helium-broker-actors --example broker_bench -- ledger
	HELIUM_BIN_DIR=$(BIN_DIR) deploy/grid.sh up
	source .helium/grid/env && export HELIUM_NATS_URL HELIUM_WORKER_THREADS HELIUM_CREDS_DIR && \
	  $(VENV)/bin/python tests/bench/grid_vs_plain.py && \
	  $(VENV)/bin/python tests/bench/sweep.py && \
	  $(VENV)/bin/python tests/bench/artifacts.py --store .helium/grid; \
	  rc=$$?; deploy/grid.sh down; exit $$rc
