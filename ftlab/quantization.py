"""Post-training quantization methods by name, and what a quantized model costs: memory, disk, decoding speed.

    from ftlab.quantization import METHODS, load_model, weight_megabytes, save_model, decode_speed

    model, tokenizer = load_model("runs/02_sft", "bnb_nf4", compute_dtype=torch.bfloat16)

Every method replaces the weights of the linear layers inside the transformer blocks (attention and MLP: 106M
of SmolLM2's 134.5M parameters) and keeps the token embedding in 16 bits (it doubles as the output layer,
28M weights). 08_quantization/quantize.py scores each; train_qat.py trains towards one of the torchao ones.

| method | library | linear weights stored as | matmul input (activations) |
|---|---|---|---|
| fp32, bf16 | - | 32- / 16-bit floats (the references) | same |
| bnb_int8 | bitsandbytes LLM.int8() | int8, one scale per row | int8 per token; outlier features (> 6) in 16-bit |
| bnb_nf4 | bitsandbytes (QLoRA's format) | NF4 codes, two per byte, one scale per 64 (scales in 8 bits) | 16-bit (weights dequantized) |
| torchao_int8 | torchao Int8WeightOnlyConfig | int8, one scale per row | 16-bit (weights dequantized) |
| torchao_int4 | torchao IntxWeightOnlyConfig(int4) | int4 values per group of 32, one per byte on a CPU | 16-bit (weights dequantized) |
| torchao_int8_dynamic | torchao Int8DynamicActivationInt8WeightConfig | int8, one scale per row | int8 per token, at each forward |
| torchao_int8_dynamic_int4 | torchao Int8DynamicActivationIntxWeightConfig(int4) | int4 per group of 32 | int8 per token |

On a CPU torchao 0.17 stores each int4 value in a byte unless its own C++ kernels are built (not in the pip wheel
here), so its int4 model is no smaller on disk than its int8 one: the rounding of int4, the size of int8. The same
IntxWeightOnlyConfig runs on a GPU too (it dequantizes to 16 bits at each call), so the method is the same on every
device, and the one train_qat.py converts to. torchao's packed int4 with a fast kernel is another config
(Int4WeightOnlyConfig): its default layout needs the `mslk` package, its tile-packed one a bf16 CUDA card (8.0+).

Where each runs (`load_model(..., device=...)`): on a GPU every method quantizes and runs there, bitsandbytes' too
(it quantizes on the device it loads to), in the GPU's 16-bit format (`compute_dtype`: bf16, fp16 on a T4); on a
CPU, bitsandbytes' and torchao's CPU paths.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

METHODS = {
    "fp32": "unquantized, as trained (32-bit floats)",
    "bf16": "unquantized, 16-bit floats",
    "bnb_int8": "bitsandbytes LLM.int8(): int8 weights per row, outliers in 16-bit",
    "bnb_nf4": "bitsandbytes NF4: 4-bit codes per block of 64, double-quantized scales",
    "torchao_int8": "torchao int8 weight-only, per row",
    "torchao_int4": "torchao int4 weight-only, per group of 32",
    "torchao_int8_dynamic": "torchao int8 weights + int8 activations per token (dynamic)",
    "torchao_int8_dynamic_int4": "torchao int4 weights (group 32) + int8 activations per token",
}


def torchao_config(method: str, group_size: int = 32):
    """The torchao config behind a method name (`train_qat.py` passes the same object to QATConfig)."""
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8DynamicActivationIntxWeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        PerGroup,
    )

    configs = {
        # version 2: torchao's Int8Tensor, which also saves to safetensors (version 1 is deprecated)
        "torchao_int8": lambda: Int8WeightOnlyConfig(version=2),
        "torchao_int4": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size)),
        "torchao_int8_dynamic": lambda: Int8DynamicActivationInt8WeightConfig(version=2),
        "torchao_int8_dynamic_int4": lambda: Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4, weight_granularity=PerGroup(group_size)),
    }
    if method not in configs:
        raise ValueError(f"{method!r} is not a torchao method: {list(configs)}")
    return configs[method]()


def transformer_linears(module: torch.nn.Module, name: str) -> bool:
    """quantize_'s filter: the linear layers of the blocks, not the output layer (it shares the embedding's weights)."""
    return isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")


def quantize_torchao(model, config) -> None:
    """Quantize `model`'s block linears in place with a torchao config (a PTQ config, or QATConfig's convert step),
    and record it the way `from_pretrained(quantization_config=TorchAoConfig(...))` does, so `save_pretrained`
    writes it (safetensors) and `from_pretrained` loads it back quantized."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig
    from transformers import TorchAoConfig
    from transformers.quantizers.quantizer_torchao import TorchAoHfQuantizer

    quantize_(model, config, filter_fn=transformer_linears)
    base = config.base_config if isinstance(config, QATConfig) else config
    model.config.quantization_config = TorchAoConfig(base, modules_to_not_convert=["lm_head"])
    model.hf_quantizer = TorchAoHfQuantizer(model.config.quantization_config)
    model.is_quantized = True


def nf4_config(compute_dtype=torch.bfloat16, quant_type: str = "nf4", double_quant: bool = True,
               storage: str = "uint8"):
    """QLoRA's 4-bit format for bitsandbytes (the one place it is built): NF4 weights (or fp4) in blocks of 64, each
    block's scale quantized again to 8 bits (double quantization: ~0.37 bits/weight less), matmuls in
    `compute_dtype`; two 4-bit values packed per `storage` byte."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=getattr(torch, storage))


def load_model(path: str, method: str, compute_dtype=torch.bfloat16, device: str = "cpu"):
    """(model, tokenizer) from the folder `path`, quantized with `method` (see METHODS) on `device` ("cpu", "cuda")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose from {list(METHODS)}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if method.startswith("bnb_"):
        # LLM.int8() quantizes each matmul's input from fp16 and logs that cast at every call: it is the method, not news.
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        quantization = BitsAndBytesConfig(load_in_8bit=True) if method == "bnb_int8" else nf4_config(compute_dtype)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=compute_dtype, quantization_config=quantization,
                                                     device_map={"": device})  # quantized as it lands there
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if method == "fp32" else compute_dtype)
        model.to(device)
        if method.startswith("torchao_"):  # (quantized where the model is)
            quantize_torchao(model, torchao_config(method))
    return model.eval(), tokenizer


# ---- What a model holds, on disk and in memory ----------------------------------------------------------------
def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor really holds: a torchao tensor subclass counts the tensors inside it (codes, scales, zero
    points), not the shape it stands for; a bitsandbytes weight adds its quantization state (scales, code table)."""
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    total = t.numel() * t.element_size()
    state = getattr(t, "quant_state", None)  # bitsandbytes 4-bit
    while state is not None:
        total += sum(v.numel() * v.element_size() for v in vars(state).values() if isinstance(v, torch.Tensor))
        state = getattr(state, "state2", None)  # double quantization: the scales' own scales
    scales = getattr(t, "SCB", None)  # bitsandbytes 8-bit: one scale per row
    return total + (scales.numel() * scales.element_size() if isinstance(scales, torch.Tensor) else 0)


def weight_megabytes(model) -> float:
    """MB (10^6 bytes) held by the model's parameters and buffers, each shared tensor once, and by what bitsandbytes
    keeps beside them once a layer has run: LLM.int8()'s first forward moves each weight's row scales (and a second
    reference to its int8 values, not counted twice) to the layer's `state`. Measure after a forward: on a CPU
    bitsandbytes also repacks NF4 then (block scales to bf16, their own 8-bit scales dropped)."""
    tensors = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        state = getattr(module, "state", None)  # bitsandbytes' MatmulLtState
        tensors += [getattr(state, name) for name in ("CB", "SCB") if isinstance(getattr(state, name, None), torch.Tensor)]
    seen, total = set(), 0
    for t in tensors:
        plain = type(t) is torch.Tensor or isinstance(t, torch.nn.Parameter) and not hasattr(t, "__tensor_flatten__")
        key = t.data_ptr() if plain and t.numel() else id(t)  # the same memory under two names counts once
        if key not in seen:
            seen.add(key)
            total += tensor_bytes(t)
    return total / 1e6


def save_model(model, tokenizer, folder: Path) -> float:
    """Save the (quantized) model and tokenizer to `folder`; return the weights' size on disk in MB."""
    from ftlab.resources import folder_megabytes

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder_megabytes(folder, "*.safetensors")


@torch.no_grad()
def decode_speed(model, tokenizer, messages: list[dict], new_tokens: int = 64) -> float:
    """Tokens per second of greedy decoding for one prompt (batch 1: how a single user waits), after a warm-up."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    fixed = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    model.generate(**ids, max_new_tokens=2, **fixed)  # warm-up: first-call allocations, weight repacking
    start = time.perf_counter()
    model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **fixed)
    return new_tokens / (time.perf_counter() - start)
