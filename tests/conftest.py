"""Shared fixtures: a tiny random Llama and a tokenizer trained here, so the suite needs no download.

The tokenizer is a small byte-level BPE trained on the project's own data, with a ChatML template that
carries `{% generation %}` markers (unlike SmolLM2's), so tests can exercise either loss-masking route.
"""

import contextlib
import json
import os
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
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
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


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests, with the reason, where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible); run `make test-gpu` on a GPU machine")
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
