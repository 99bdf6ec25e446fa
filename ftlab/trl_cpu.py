"""TRL's SFTTrainer, made to run on a CPU.

TRL 1.15's `SFTTrainer.compute_loss` always calls the model with `fused_lm_head=True`: a Triton kernel
that computes per-token log-probabilities without building the full (batch, seq, vocab) logits. It saves
memory on a GPU, but Triton has no CPU backend, so wherever Triton is installed (every CUDA build of
torch ships it) a CPU run fails with `RuntimeError: 0 active drivers ([])`. No config value avoids it:
`loss_type="nll"` is the default and takes the same path.

The fix is one method: on a CPU, compute the loss the way `transformers.Trainer` does (the model's own
forward with `labels`, where prompt tokens are already -100). The loss is the same token-mean
cross-entropy; only TRL's extra logs (entropy, token accuracy) are missing. On a GPU nothing changes.
"""

from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer as TRLSFTTrainer


class SFTTrainer(TRLSFTTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.device.type == "cpu":
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
