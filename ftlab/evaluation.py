"""Measuring the task: greedy generation on the eval split, scored by `ftlab.metrics.score`.

Generation dominates the cost of a small run on a CPU (each new token is a forward pass), so prompts
are batched with left padding: every row then ends at the same position and new tokens line up.
Greedy decoding (no sampling) makes before/after comparisons deterministic.
"""

from __future__ import annotations

import torch

from ftlab.data import gold_of
from ftlab.metrics import score


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 80,
             batch_size: int = 16) -> list[str]:
    """Greedy completions (special tokens stripped) for chat `prompts`, in order."""
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts[start:start + batch_size]]
        # The chat template already writes the special tokens; left padding keeps prompt ends aligned.
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                          add_special_tokens=False).to(model.device)
        new = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    model.train(was_training)
    return [o.strip() for o in outputs]


def evaluate(model, tokenizer, examples: list[dict], **generate_kwargs) -> tuple[dict, list[str]]:
    """Score the model on SFT-format `examples`; return (scores, predictions)."""
    prompts = [ex["messages"][:-1] for ex in examples]
    predictions = generate(model, tokenizer, prompts, **generate_kwargs)
    return score(predictions, [gold_of(ex) for ex in examples]), predictions
