# Two commands on a fresh clone: `make demo` (the agent loop on the embedded default) and
# `make test`. Both create .venv and install everything they need.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch by default, so a CPU machine never pulls a multi-GB CUDA build.
# With a GPU: make TORCH_INSTALL="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH_INSTALL ?= torch==2.13.0
# llama.cpp is built from source (~7 min once); portable flags, no CPU-specific code.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
DATA ?= $(if $(ARCHLORE_DATA),$(ARCHLORE_DATA),../shared/data)
DEMO_SOURCE := $(if $(wildcard $(DATA)/nb201/nb201_all.csv),cifar10,none)

.PHONY: setup setup-local setup-team demo test test-local test-all bench clean

$(BIN)/.archlore-base: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_INSTALL)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(BIN)/.archlore-local: $(BIN)/.archlore-base
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q -e '.[local,dev]'
	touch $@

setup: $(BIN)/.archlore-base

setup-local: $(BIN)/.archlore-local

# Ray, the Postgres client and Playwright (the web page test), for --cluster / --storage postgresql:// and their tests (CI installs them)
$(BIN)/.archlore-team: $(BIN)/.archlore-base
	$(BIN)/pip install -q -e '.[ray,postgres,browser,dev]'
	touch $@

setup-team: $(BIN)/.archlore-team

demo: setup-local
	$(BIN)/archlore run --space nb201 --executor train --target digits --source $(DEMO_SOURCE) \
		--llm analyst=local,default=none --budget 12 --warmup 4 --check-every 4 --seed 0 --data $(DATA) \
		--memory .archlore/memory --runs-dir .archlore/runs --run-id demo-$$(date +%Y%m%d-%H%M%S) \
		--out .archlore/demo-record.json

# The README's test command (and CI's): everything but the tests that need the embedded local
# model, so a fresh machine needs no llama.cpp build for it.
test: setup
	$(BIN)/python -m pytest -q -m "not local_llm"

# The tests that run the real local model (llama.cpp + Qwen2.5-Coder-1.5B): builds llama.cpp once.
test-local: setup-local
	$(BIN)/python -m pytest -q -m local_llm

test-all: setup-local
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/archlore bench --protocol lapt-nb201 --strategy rea --strategy copy-top --strategy rea-seeded --strategy agent --llm none --split heldout --seeds 30 --out benchmarks/results/lapt-nb201.json

clean:
	rm -rf $(VENV) .archlore
