"""Shared fixtures: a tiny random Llama and a tokenizer trained here, so the suite needs no download.

The tokenizer is a small byte-level BPE trained on the project's own data, with a ChatML template that
carries `{% generation %}` markers (unlike SmolLM2's), so tests can exercise either loss-masking route.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Write a ~100k-parameter Llama and its tokenizer to `path`; deterministic for a given seed.

    `hidden=64` gives layers as wide as one bitsandbytes 4-bit block (64 weights), which its CPU path needs;
    `layers=30` has SmolLM2-135M's depth, for recipes that name its layer ranges (07's passthrough)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = []
    for name in ("sft_train.jsonl", "sft_eval.jsonl"):
        for line in (ROOT / "data" / name).read_text(encoding="utf-8").splitlines():
            corpus += [m["content"] for m in json.loads(line)["messages"]]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)

    torch.manual_seed(seed)
    return save_random_model(path, tokenizer, LlamaConfig, LlamaForCausalLM, hidden, layers, tokenizer.eos_token_id)


def save_random_model(path: Path, tokenizer, config_class, model_class, hidden: int, layers: int, stop) -> Path:
    """A random `model_class` (4 heads, 2 key/value heads, tied embeddings) sized to `tokenizer`, saved with it to
    `path`; `stop`: the token id(s) that end a reply in its generation config."""
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model = model_class(config)
    model.generation_config.eos_token_id = stop
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_64(tmp_path_factory) -> Path:
    """The tiny Llama at width 64, for 4-bit tests."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-64"), hidden=64)


@pytest.fixture(scope="session")
def smol_tiny(tmp_path_factory) -> Path:
    """A tiny random Llama (width 64) with SmolLM2's own tokenizer and chat template: llama.cpp's converter
    recognises a tokenizer by how it splits text, and knows SmolLM2's, not the toy one the other tests use."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ftlab.models import resolve_model

    path = tmp_path_factory.mktemp("smol-tiny")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# Two more chat templates, as the hub models carry them, so the answer-only loss and the shared prompt are tested on
# each. Qwen2.5-Instruct's (its tool-calling branches left out): ChatML with no {% generation %} markers, a default
# system prompt written when a conversation has none, and a newline after each turn's <|im_end|>.
QWEN2_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
# Meta-Llama-3-8B-Instruct's: <|begin_of_text|> from the template, role headers, each turn's content trimmed and
# ended by <|eot_id|> (no newline after it), no default system prompt, no {% generation %} markers.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def build_chat_model(path: Path, style: str, hidden: int = 64) -> Path:
    """A tiny random model with the tokens and chat template of a hub family (`style`), written to `path`:
    "qwen2": a Qwen2 model (q/k/v biases) whose tokenizer is Qwen2.5-Instruct's kind: no BOS, eos <|im_end|>,
    pad <|endoftext|>; "llama3": a Llama whose tokenizer is Llama-3-Instruct's kind: its header and end-of-turn
    tokens added as special tokens, BOS <|begin_of_text|> (the template writes it; plain tokenizing adds it too),
    eos <|eot_id|>, no pad token. Width 64 by default: one bitsandbytes 4-bit block, so 06_qlora can train it."""
    import torch
    from tokenizers import processors
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    build_tiny_model(path, hidden=hidden)  # the byte-level BPE trained on our data, and a Llama to replace
    tokenizer = AutoTokenizer.from_pretrained(path)
    if style == "qwen2":
        tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = None, "<|im_end|>", "<|endoftext|>"
        tokenizer.chat_template = QWEN2_CHAT_TEMPLATE
        config_class, model_class = Qwen2Config, Qwen2ForCausalLM
        stop = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    elif style == "llama3":
        tokenizer.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
        tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "<|begin_of_text|>", "<|eot_id|>", None
        bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos)])
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
        config_class, model_class = LlamaConfig, LlamaForCausalLM
        stop = [tokenizer.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eot_id|>")]
    else:
        raise ValueError(f"style must be qwen2 or llama3, not {style!r}")
    torch.manual_seed(0)
    # as the hub's generation_config.json: either token ends a reply
    return save_random_model(path, tokenizer, config_class, model_class, hidden, 2, stop)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny random Qwen2 (width 64) with a Qwen2.5-Instruct-style tokenizer and chat template."""
    return build_chat_model(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_llama3(tmp_path_factory) -> Path:
    """A tiny random Llama (width 64) with a Llama-3-Instruct-style tokenizer and chat template."""
    return build_chat_model(tmp_path_factory.mktemp("tiny-llama3"), "llama3")


def one_at_a_time(name: str):
    """A lock every process on this machine shares (each pytest-xdist worker, another pytest run): for what
    two tests must not do at once, such as binding the launchers' fixed port or training the real model."""
    from filelock import FileLock

    return FileLock(Path(tempfile.gettempdir()) / f"finetune-lab-{name}.lock")


def run_script(script: str, *args: str, timeout: int = 600, threads: str | None = "1",
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a technique's train.py as a learner would; return the finished process (output captured).

    One thread by default: tiny-model losses then match the recorded ones. threads=None keeps the
    caller's setting (all cores unless OMP_NUM_THREADS says otherwise), for real-model runs, which take
    the machine: one at a time, even under `pytest -n 2`. `env` adds environment variables."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    with one_at_a_time("real-model") if threads is None else contextlib.nullcontext():
        return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=timeout, check=False)


def interrupted_at_step_2(run_dir: Path, tmp_path: Path) -> Path:
    """A fresh output folder holding only `run_dir`'s checkpoint-2: the state of a run stopped after step 2."""
    import shutil

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(run_dir / "checkpoint-2", resumed / "checkpoint-2")
    return resumed


def gpu_selected(markexpr: str) -> bool:
    """Whether a `-m` expression asks for the `gpu` tests (`-m gpu`, `-m "gpu and not slow"`), not `not gpu`."""
    return re.search(r"(?<!not )\bgpu\b", markexpr or "") is not None


def pytest_configure(config):
    """The default suite runs on the CPU on any machine: on a GPU machine its runs would train on CUDA and meet
    losses recorded on a CPU. So CUDA is hidden (for this process and every script it starts) unless the run
    selects the `gpu` tests (`make test-gpu`: `pytest -m gpu`)."""
    if not gpu_selected(config.getoption("markexpr", "")):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests, with the reason, where no CUDA device is visible (or the run hid it)."""
    import torch

    if torch.cuda.is_available():
        return
    reason = ("needs a CUDA GPU (none visible); run `make test-gpu` on a GPU machine"
              if gpu_selected(config.getoption("markexpr", "")) else
              "needs a CUDA GPU: the default suite runs on the CPU (CUDA hidden); run `make test-gpu`")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TEARDOWN_ABORT = "terminate called without an active exception"


def aborted_after_finishing(result: subprocess.CompletedProcess, last_output: Path) -> bool:
    """A launched run that completed (its last output is written) and then lost a rank to an abort at interpreter
    exit: seen now and then with torch 2.14's gloo on 2 processes under load (DDP, FSDP2, ZeRO alike), after all
    the work. Such a run is judged on what it wrote; any other non-zero exit still fails the test."""
    return (result.returncode != 0 and TEARDOWN_ABORT in result.stdout + result.stderr and last_output.is_file()
            and "Traceback" not in result.stderr.split(TEARDOWN_ABORT)[0][-5000:])
