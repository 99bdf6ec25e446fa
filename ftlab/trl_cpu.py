"""TRL's trainers on any device, and SFT on a CPU at the hardware's pace.

TRL 1.15's SFT, DPO, KTO, GRPO and RLOO trainers all get per-token log-probabilities the same way:
`add_fused_lm_head` patches the model so that `model(..., fused_lm_head=True)` runs the output layer only
at the positions that carry a label, through a Triton kernel (`trl.trainer.utils._ChunkedLogProbFunction`)
that never builds the full (batch, seq, vocab) logits. That saves memory on a GPU, but Triton has no CPU
backend: wherever it is installed (every CUDA build of torch ships it) a CPU run fails with
`RuntimeError: 0 active drivers ([])`, and on a Mac, where Triton does not exist, TRL has no kernel at all.
No config value avoids it: every loss type of every one of these trainers takes that path.

One fix serves them all, so no trainer is subclassed for it: `install()` puts a dispatcher in the kernel's
place in TRL's module. On an NVIDIA (or Intel) GPU it calls TRL's Triton kernel, unchanged; anywhere else it
computes the same five per-token quantities with plain PyTorch (`log_probs_in_pytorch`). The trainers' own
loss code then runs as written, so every `loss_type` means what TRL's documentation says (SFT's `dft`,
DPO's `sigmoid`/`ipo`/`hinge`..., GRPO's `dapo`/`grpo`..., KTO's `kto`). Every script calls `install()`
before building a trainer; importing this module's `SFTTrainer` does it too.

SFT also gets a faster CPU path for its default loss (`nll`): the output layer (576 x 49,152 weights in
SmolLM2, a fifth of the model) runs only on the ~52 answer tokens of a ~200-token example, and the
~90-token system prompt that every row shares is computed once per batch. Measured on the 2-core CPU: a
step of 8 examples in bf16 went from ~9.7 s to ~6.9 s. Any other loss type goes through TRL's own code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import SFTTrainer as TRLSFTTrainer

from ftlab.models import has_soft_prompt
from ftlab.private_apis import TRL_LOGPROB_KERNEL, check


# ---- 1. The log-probabilities every TRL trainer asks for, on any device ------------------------------------
def log_probs_in_pytorch(hidden, weight, bias, targets, temperature=1.0, chunk_size=None, final_logit_softcapping=None,
                         logit_scale=1.0, outputs=("log_probs",)):
    """What TRL's Triton kernel returns, in plain PyTorch: for each of N labelled positions, (log-probability of
    its label, entropy, log sum p^2, mean logit, whether the label is the top token); fields not in `outputs`
    are None. Same arguments as the kernel (`chunk_size` only tiles its GPU memory; here it is unused).

    The (N, vocab) logits are built for the labelled positions only, in fp32 for the softmax."""
    z = F.linear(hidden, weight, bias).float() * logit_scale
    if final_logit_softcapping is not None:  # Gemma-style: squash logits into (-cap, cap)
        z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
    z = z / temperature
    log_z = z.logsumexp(-1)
    log_probs = z.gather(-1, targets[:, None]).squeeze(-1) - log_z
    entropy = log_z - (z.softmax(-1) * z).sum(-1) if "entropy" in outputs else None
    with torch.no_grad():  # diagnostics: TRL marks them non-differentiable too
        log_sum_sq_probs = (2 * (z - log_z[:, None])).logsumexp(-1) if "log_sum_sq_probs" in outputs else None
        mean_logits = z.mean(-1) if "mean_logits" in outputs else None
        is_top1 = z.argmax(-1) == targets if "is_top1" in outputs else None  # ties: the first top token, as TRL
    return log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1


class LogProbsOnAnyDevice:
    """Stands where TRL keeps its Triton kernel: TRL's kernel on a GPU it runs on, `log_probs_in_pytorch` elsewhere."""

    def __init__(self, triton_kernel):
        self.triton_kernel = triton_kernel  # None where Triton is not installed (macOS, Windows)

    @property
    def ftlab_replaces(self):
        """TRL's own object in this place, which `ftlab.private_apis` checks the signature of."""
        return self.triton_kernel

    def apply(self, hidden, *args):
        if self.triton_kernel is not None and hidden.device.type in ("cuda", "xpu"):
            return self.triton_kernel.apply(hidden, *args)
        return log_probs_in_pytorch(hidden, *args)


def install() -> None:
    """Make every TRL trainer's fused log-probabilities work on this machine's device (idempotent).

    First checks the TRL internals this module uses (`ftlab.private_apis`, once per process): a TRL that
    renamed or reshaped them stops here with one line, not a wrong loss or a crash deep inside training."""
    check("trl")
    kernel = TRL_LOGPROB_KERNEL.get()
    if not isinstance(kernel, LogProbsOnAnyDevice):
        TRL_LOGPROB_KERNEL.set(LogProbsOnAnyDevice(kernel))


def triton_runs_on(device: torch.device) -> bool:
    """Whether TRL's Triton loss kernel can run here: an NVIDIA (or Intel) GPU, with Triton installed.

    Not on a CPU, and not on a Mac at all: Triton has no macOS wheels, so there TRL's kernel is `None`
    and the PyTorch path above runs, on the CPU and on the Apple GPU (mps) alike."""
    kernel = TRL_LOGPROB_KERNEL.get()
    return device.type in ("cuda", "xpu") and getattr(kernel, "triton_kernel", kernel) is not None


# ---- 2. SFT's default loss, faster on a CPU ------------------------------------------------------------------

def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> int:
    """How many leading tokens all rows have in common: here the system prompt and chat header, ~90 tokens."""
    same = (input_ids == input_ids[:1]).all(0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(0)
    return int(same.long().cumprod(0).sum())


def hidden_states(model, inputs: dict, min_shared: int = 32) -> torch.Tensor:
    """The transformer's last hidden states (no output layer), with a prefix shared by every row computed once.

    Every example starts with the same ~90-token system prompt, and causal attention means those positions
    see nothing else: their states are identical in every row. So the prefix runs once (batch 1), its keys
    and values are repeated for each row, and only the rest of each row runs, attending to them. The
    result, loss and gradients included, equals the plain forward; a batch of 8 costs ~30% fewer token
    passes. Packed rows (position_ids) and batches with a short common prefix take the plain forward."""
    decoder = model.get_decoder()
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    shared = 0 if "position_ids" in inputs or len(ids) < 2 else min(shared_prefix_length(ids, mask), ids.shape[1] - 1)
    # Under gradient checkpointing transformers turns the cache off while training (each block is recomputed from
    # its input in the backward), so there are no prefix keys/values to share: the plain forward then.
    checkpointing = decoder.training and getattr(model, "is_gradient_checkpointing", False)
    if shared < min_shared or checkpointing:
        body = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        return decoder(**body).last_hidden_state
    head = decoder(input_ids=ids[:1, :shared], use_cache=True)
    cache = head.past_key_values
    cache.batch_repeat_interleave(len(ids))  # the prefix's keys/values for every row (gradients sum back)
    tail = decoder(input_ids=ids[:, shared:], attention_mask=mask, past_key_values=cache, use_cache=True)
    return torch.cat([head.last_hidden_state.expand(len(ids), -1, -1), tail.last_hidden_state], dim=1)


def loss_on_labelled_tokens(model, inputs: dict, num_items_in_batch=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, correct-token rate) of next-token prediction, with the output layer run only where labels != -100.

    Equal to the model's own `labels=` loss: position t predicts token t+1, and the sum over labelled tokens
    is divided by `num_items_in_batch` (all labelled tokens of the accumulated batch) or by their count here."""
    labels = inputs["labels"]
    hidden = hidden_states(model, inputs)
    targets = labels[:, 1:]
    keep = targets != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()  # (labelled tokens, vocab) only
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    loss = loss / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))
    accuracy = (logits.argmax(-1) == targets[keep]).float().mean() if keep.any() else torch.zeros(())
    return loss, accuracy


class SFTTrainer(TRLSFTTrainer):
    """TRL's SFTTrainer, with the faster CPU path above for the plain next-token loss (`loss_type: nll`).

    It reads and updates TRL's own `self._metrics`, `self._total_train_tokens` and `self.aux_loss_enabled`: TRL
    internals, listed in `ftlab.private_apis` and checked (by `install()`) before the trainer is built."""

    def __init__(self, *args, **kwargs):
        install()  # every other case (a GPU, `dft`, label smoothing, a soft prompt) is TRL's own code
        super().__init__(*args, **kwargs)

    def fast_path_fits(self, model, inputs, return_outputs) -> bool:
        """Whether this batch's loss is the plain token-mean cross-entropy that `loss_on_labelled_tokens` computes."""
        # Off CUDA only: on an NVIDIA GPU (with or without Triton, e.g. Windows) TRL's own documented path runs.
        return (self.args.device.type != "cuda" and not triton_runs_on(self.args.device)
                and self.args.loss_type in ("nll", "chunked_nll")
                and self.label_smoother is None and self.compute_loss_func is None and not return_outputs
                and "labels" in inputs and hasattr(model, "get_decoder")
                and not has_soft_prompt(model)  # (a soft prompt is added inside PEFT's forward, which this skips)
                and not self.aux_loss_enabled)  # an MoE's load-balancing loss needs the router logits: TRL's path

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.fast_path_fits(model, inputs, return_outputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Accelerate applies bf16 autocast by wrapping model.forward; this path calls the model's parts, so
        # it enters the same autocast itself (without it, a "bf16" run would quietly run in fp32).
        with self.accelerator.autocast():
            loss, accuracy = loss_on_labelled_tokens(model, inputs, num_items_in_batch)
        mode = "train" if model.training else "eval"
        self._metrics[mode]["mean_token_accuracy"].append(accuracy.item())
        if mode == "train":
            self._count_tokens(inputs)
        return loss

    def _count_tokens(self, inputs):
        """The count TRL keeps and logs as num_tokens: real (non-padding) tokens trained on."""
        self._total_train_tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs \
            else inputs["input_ids"].numel()
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]

    @property
    def tokens_seen(self) -> int:
        """Non-padding tokens trained on so far (TRL's own count, kept on the CPU path too)."""
        return int(self._total_train_tokens)
