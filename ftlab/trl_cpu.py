"""TRL's SFTTrainer, made to run on a CPU, and to run there at the hardware's pace.

TRL 1.15's `SFTTrainer.compute_loss` always calls the model with `fused_lm_head=True`: a Triton kernel
that computes per-token log-probabilities without building the full (batch, seq, vocab) logits. It saves
memory on a GPU, but Triton has no CPU backend, so wherever Triton is installed (every CUDA build of
torch ships it) a CPU run fails with `RuntimeError: 0 active drivers ([])`. No config value avoids it:
`loss_type="nll"` is the default and takes the same path.

The fix is one method. On a CPU the loss is computed here, and computed where it counts: the output
layer (576 x 49,152 weights in SmolLM2, a fifth of the model) runs only on the positions that carry
loss. With completion-only loss that is the ~52 answer tokens of a ~200-token example, so the prompt's
full-vocabulary logits, which the loss would multiply by zero, are never built. Measured on the 2-core
CPU: a step of 8 examples in bf16 went from ~9.7 s to ~6.9 s. The loss is the same token-mean
cross-entropy; the token accuracy and token count TRL logs are kept too. On an NVIDIA GPU nothing
changes. On a Mac, where Triton does not exist, this path is the one that works, on the CPU and on the
Apple GPU (mps) alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer
from trl import SFTTrainer as TRLSFTTrainer

from ftlab.models import has_soft_prompt


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
    if shared < min_shared:
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


def triton_runs_on(device: torch.device) -> bool:
    """Whether TRL's Triton loss kernel can run here: an NVIDIA (or Intel) GPU, with Triton installed.

    Not on a CPU, and not on a Mac at all: Triton has no macOS wheels, so there TRL's kernel is `None`
    and its loss would fail on the CPU and on the Apple GPU (mps) alike; this module's loss runs on both."""
    from trl.trainer import utils

    return device.type in ("cuda", "xpu") and utils._ChunkedLogProbFunction is not None


class SFTTrainer(TRLSFTTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if triton_runs_on(self.args.device):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs or "labels" not in inputs or not hasattr(model, "get_decoder") or has_soft_prompt(model):
            # (a soft prompt is added inside the PEFT model's own forward, which this path would skip)
            if model.training and not return_outputs:
                self._count_tokens(inputs)
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
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
