"""Mixture of Experts, from a dense model: sparse upcycling, and what the router does with the tokens.

A dense transformer block runs every token through one MLP. An MoE block holds several MLPs ("experts")
and a small linear *router* that scores them for each token; only the top-k experts run, and their
outputs are mixed with the router's (renormalised) weights. Total parameters grow with the number of
experts; the compute per token grows only with k. Mixtral-8x7B: 47B parameters, 13B active per token.

*Sparse upcycling* (Komatsuzaki et al., 2022) starts an MoE from a trained dense model instead of from
scratch: every expert is a copy of the dense MLP, the attention, embeddings and norms are copied as
they are, and only the router is new. With identical experts and top-k weights that sum to one, the
MoE computes exactly the dense function (tests/test_moe.py checks the logits), so training starts from
everything the dense model knew. But identical experts also give the router no gradient from the task loss
(the output is the same whichever experts a token goes to), so a little noise on the copies (`noise`) lets
the router learn from the start, at the price of starting near the dense function rather than at it.

The failure to watch is *expert collapse*: the router learns to favour a few experts, which then get
all the gradient and become better still, so the others are never used. The load-balancing auxiliary
loss (Switch Transformer; `router_aux_loss_coef`) adds num_experts * sum_e f_e * P_e, where f_e is the
fraction of tokens that have expert e among their top-k (so the f_e sum to top_k) and P_e the router's mean
probability for it: top_k when both are uniform, up to num_experts when routing collapses. `expert_load`
measures each expert's share of the choices (f_e / top_k) per layer, before and after training.

On a GPU the experts should compute as every other matmul does under autocast (bf16 on a bf16 card), through
one grouped kernel; `experts_follow_autocast` makes them (transformers alone keeps them in fp32: see there).
"""

from __future__ import annotations

import torch

from ftlab.errors import LearnerError


class CannotUpcycle(LearnerError, ValueError):
    """A dense model whose function Mixtral's layers cannot hold (a script shows it as one `error:` line)."""


def upcycle(dense, num_experts: int = 4, top_k: int = 2, noise: float = 0.0, router_std: float = 0.02,
            router_aux_loss_coef: float = 0.01, seed: int = 0):
    """A `MixtralForCausalLM` whose experts are all copies of `dense`'s MLP (a Llama-architecture model without
    biases, such as SmolLM2), plus `noise` x each weight's std of Gaussian noise per expert, and a fresh router."""
    from transformers import MixtralConfig, MixtralForCausalLM

    c = dense.config
    if c.model_type != "llama":
        raise ValueError(f"upcycling copies a Llama-architecture block into Mixtral's; got model_type {c.model_type!r}")
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be between 1 and num_experts ({num_experts}), got {top_k}")
    biased = [flag for flag in ("mlp_bias", "attention_bias") if getattr(c, flag, False)]
    if biased:  # Mixtral's experts and attention hold no biases: dropping them would change the function
        raise CannotUpcycle(f"upcycling cannot copy this model exactly: its config sets {' and '.join(biased)}=True, "
                            "and Mixtral's layers have no biases")
    config = MixtralConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=getattr(c, "head_dim", None), hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
        rope_parameters=c.rope_parameters, tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
        num_local_experts=num_experts, num_experts_per_tok=top_k, router_aux_loss_coef=router_aux_loss_coef,
        output_router_logits=False, sliding_window=None, attention_dropout=0.0, dtype=str(dense.dtype).split(".")[-1])
    generator = torch.Generator().manual_seed(seed)
    dense_weights = dense.state_dict()
    weights = {}
    for name, tensor in dense_weights.items():
        if ".mlp." not in name:
            weights[name] = tensor  # attention, norms, embeddings: as they are
    for i in range(c.num_hidden_layers):
        mlp = f"model.layers.{i}.mlp."
        gate, up, down = (dense_weights[mlp + p + ".weight"].float() for p in ("gate_proj", "up_proj", "down_proj"))
        gate_up = torch.cat([gate, up])  # Mixtral fuses them: [2 * intermediate, hidden] per expert

        def copies(w):
            jitter = noise * w.std() * torch.randn((num_experts, *w.shape), generator=generator)
            return (w.expand(num_experts, *w.shape) + jitter).to(dense.dtype)

        weights[mlp + "experts.gate_up_proj"] = copies(gate_up)
        weights[mlp + "experts.down_proj"] = copies(down)
        weights[mlp + "gate.weight"] = (router_std * torch.randn(num_experts, c.hidden_size, generator=generator)
                                        ).to(dense.dtype)
    moe = MixtralForCausalLM(config)  # randomly initialised, then every weight replaced:
    result = moe.load_state_dict(weights, strict=False)  # (strict=False: a tied head has no weight of its own)
    unset = [n for n in result.missing_keys if not (c.tie_word_embeddings and n == "lm_head.weight")]
    if unset or result.unexpected_keys:
        raise RuntimeError(f"upcycling left {unset[:3]} unset and {result.unexpected_keys[:3]} unused")
    moe.generation_config = dense.generation_config
    return moe


def experts_per_layer(config) -> int:
    """How many experts an MoE config declares (Mixtral and OLMoE say num_local_experts, Qwen2-MoE num_experts)."""
    return getattr(config, "num_local_experts", None) or config.num_experts


def total_and_active_parameters(model) -> tuple[int, int]:
    """(total, used per token): of each MoE layer's experts only top_k of num_experts run for a token."""
    c = model.config
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    total = sum(p.numel() for p in model.parameters())
    num, k = experts_per_layer(c), c.num_experts_per_tok
    return total, total - experts + experts * k // num


@torch.no_grad()
def expert_load(model, tokenizer, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """[layers, experts]: the share of (non-padding) tokens each layer's router sends to each expert, counting
    each of a token's top-k choices (so a row sums to 1). Uniform is 1 / num_experts everywhere."""
    was_training = model.training
    model.eval()
    c = model.config
    num, k = experts_per_layer(c), c.num_experts_per_tok
    counts = torch.zeros(c.num_hidden_layers, num)
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True).to(model.device)
        out = model(**batch, output_router_logits=True)
        keep = batch["attention_mask"].flatten().bool().cpu()
        for layer, logits in enumerate(out.router_logits):  # each [tokens, experts]
            chosen = logits.float().cpu()[keep].topk(k, dim=-1).indices
            counts[layer] += torch.bincount(chosen.flatten(), minlength=num).float()
    model.train(was_training)
    return counts / counts.sum(dim=1, keepdim=True)


def plot_expert_load(loads: dict[str, torch.Tensor], path) -> None:
    """One heat map per entry ({"before": [layers, experts], "after": ...}): share of tokens per expert."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(loads), figsize=(3.2 * len(loads) + 1, 6), squeeze=False)
    top = max(float(load.max()) for load in loads.values())
    for i, (ax, (title, load)) in enumerate(zip(axes[0], loads.items(), strict=True)):
        image = ax.imshow(load.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=top)
        ax.set_title(title)
        ax.set_xlabel("expert")
        ax.set_xticks(range(load.shape[1]))
        if i == 0:
            ax.set_ylabel("layer")
    fig.colorbar(image, ax=axes[0].tolist(), label="share of tokens")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# ---- The experts under autocast (transformers 5.17, torch 2.14) -------------------------------------------------
# transformers runs Mixtral's (and OLMoE's, Qwen2-MoE's) experts with its `grouped_mm` backend by default
# (modeling_utils.py: get_correct_experts_implementation), which calls torch.nn.functional.grouped_mm with the
# input cast to the weights' dtype (integrations/moe.py, _grouped_mm), because grouped_mm is not autocast-enabled.
# So with fp32 weights, as 04 keeps them (fp32 master weights, bf16 autocast for the matmuls), the experts compute
# in fp32 whatever autocast says; and on CUDA torch's grouped_mm runs its fused kernel for bf16 only (on sm90/sm100;
# any other dtype or card takes a loop of one matmul per expert, aten/native/cuda/GroupedBlas.cpp). The backend
# below does for the experts what autocast does for an nn.Linear: it casts the input and a copy of each expert
# weight to the autocast dtype (the gradient flows back to the fp32 weights through the cast), then runs
# transformers' own grouped_mm forward. Outside autocast it is that forward unchanged. Registered through
# transformers' ExpertsInterface, the documented way to add an experts backend; a rename there fails loudly here.
AUTOCAST_EXPERTS = "grouped_mm_autocast"
EXPERT_TENSORS = ("gate_up_proj", "up_proj", "down_proj", "gate_up_proj_bias", "up_proj_bias", "down_proj_bias")


class _CastExperts:
    """An experts module as transformers' forward reads it, its weights (with a LoRA update, if PEFT put one on
    them) cast to `dtype`; everything else (num_experts, the activation, the gate) is the module's own."""

    def __init__(self, experts: torch.nn.Module, dtype: torch.dtype):
        self._experts = experts
        for name in EXPERT_TENSORS:
            tensor = getattr(experts, name, None)
            if isinstance(tensor, torch.Tensor):
                setattr(self, name, tensor.to(dtype))

    def __getattr__(self, name):
        return getattr(self._experts, name)


def grouped_mm_autocast_forward(experts, hidden_states, top_k_index, top_k_weights):
    """transformers' `grouped_mm` experts forward, in the autocast dtype when autocast is on for this device."""
    from transformers.integrations.moe import grouped_mm_experts_forward

    device = hidden_states.device.type
    if not torch.is_autocast_enabled(device):
        return grouped_mm_experts_forward(experts, hidden_states, top_k_index, top_k_weights)
    dtype = torch.get_autocast_dtype(device)
    return grouped_mm_experts_forward(_CastExperts(experts, dtype), hidden_states.to(dtype), top_k_index,
                                      top_k_weights)


def experts_follow_autocast(model) -> str:
    """Register `grouped_mm_autocast` with transformers and switch `model`'s experts to it; return the
    implementation now in use.

    04_moe calls it when it trains on a GPU; on a CPU it leaves transformers' default, as the recorded runs had it."""
    try:
        from transformers.integrations.moe import ExpertsInterface, grouped_mm_experts_forward  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"ftlab.moe: transformers {__import__('transformers').__version__} moved its experts "
                           f"backends ({e}); checked against 5.17") from None
    ExpertsInterface.register(AUTOCAST_EXPERTS, grouped_mm_autocast_forward)
    model.set_experts_implementation(AUTOCAST_EXPERTS)
    return model.get_experts_implementation()[""]
