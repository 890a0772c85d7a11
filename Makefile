# The README's two commands: `make demo` (set-up + the main job on bundled data, offline, CPU)
# and `make test` (set-up + the default test suite: slow and GPU tests skipped). Both create .venv on first use.
# `make test-slow` runs only the tests marked slow, `make test-all` everything (slow and GPU marks included:
# GPU tests still skip themselves without a CUDA device).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline by default: the demo and tests never touch the Hub or an LLM API.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-slow test-all lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/zerank.py --config recipes/configs/demo.yaml

test: setup
	$(PY) -m pytest -q

# pytest exits 5 when a mark selects no test: not a failure here (a checkout may mark none slow).
test-slow: setup
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

lint: setup
	$(VENV)/bin/ruff check zelo_hf recipes eval tests

clean:
	rm -rf $(VENV) outputs
