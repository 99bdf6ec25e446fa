"""Measuring the task: greedy generation on the eval sets, scored by `ftlab.metrics`.

Generation dominates the cost of evaluation on a CPU (each new token is a forward pass), so it is made
as cheap as it can be without changing a single score:
- prompts are batched, sorted by length so a batch holds similar lengths (less padding), with left
  padding so every row ends at the same position and new tokens line up;
- the system prompt that every task prompt starts with is computed once per batch, not once per row;
- an answer that cannot become valid JSON any more (it starts with prose, or a ``` fence) is stopped
  after a few tokens: the strict metric scores it wrong whatever follows, and the untrained model
  would otherwise write prose up to the token budget on every example. A describe answer (one sentence)
  is stopped once it starts a second line, for the same reason.
Greedy decoding (no sampling) makes before/after comparisons deterministic.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import NamedTuple

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from ftlab import private_apis
from ftlab.data import gold_of
from ftlab.metrics import describe_score, probe_score, score
from ftlab.models import has_soft_prompt
from ftlab.task import task_of


def not_json(text: str) -> bool:
    """An answer that does not start with "{" can no longer be one JSON object (the extract task)."""
    return bool(text.strip()) and not text.lstrip().startswith("{")


def not_one_line(text: str) -> bool:
    """An answer that has started a second line can no longer be one sentence (the describe task)."""
    return "\n" in text.strip()


class StopWhenHopeless(StoppingCriteria):
    """Stop a row once its answer, `shown` tokens long, can no longer score (`hopeless(text)` is true)."""

    def __init__(self, tokenizer, prompt_length: int, hopeless=not_json, shown: int = 16):
        self.tokenizer, self.prompt_length, self.hopeless, self.shown = tokenizer, prompt_length, hopeless, shown

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_length:]
        if new.shape[1] < self.shown:  # keep a few tokens, so a learner sees what the model was saying
            return torch.zeros(len(new), dtype=torch.bool, device=input_ids.device)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([self.hopeless(t) for t in texts], device=input_ids.device)


def common_prefix_length(token_lists: list[list[int]]) -> int:
    """How many leading tokens all lists share (for our prompts: the system prompt and chat header)."""
    shortest = min(token_lists, key=len)
    for i, token in enumerate(shortest):
        if any(tokens[i] != token for tokens in token_lists):
            return i
    return len(shortest)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 80, batch_size: int = 32,
             hopeless=None, min_shared: int = 32, constraint=None) -> list[str]:
    """Greedy completions (special tokens stripped) for chat `prompts`, in the order given.

    Prompts that begin with the same tokens (every task prompt starts with the same ~90-token system
    prompt) have that prefix computed once per batch: its keys and values are repeated for each row, and
    the rows continue from there. Each row is then [prefix][padding][its own text], the padding masked out.
    `hopeless(text)`, if given, stops a row whose answer can no longer score (`StopWhenHopeless`). `constraint()`,
    if given, makes a fresh logits processor for each batch (a grammar's state is per batch; 00_prompting's
    JSON-schema decoding)."""
    was_training = model.training
    model.eval()
    # An MoE trained with its load-balancing loss keeps `output_router_logits` on; generation needs no aux loss
    # (and with the shared prefix below, its router logits and the attention mask differ in length).
    router_logits = getattr(model.config, "output_router_logits", False)
    if router_logits:
        model.config.output_router_logits = False
    if has_soft_prompt(model) or model.device.type != "cpu":
        # A soft prompt sits before the text (or in the cache): no shared prefix to reuse. Off the CPU the plain
        # `generate` call runs: the shared prefix is a CPU speed-up, tested equal to it on the CPU only.
        min_shared = 10**9
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokens = tokenizer(texts, add_special_tokens=False)["input_ids"]  # the chat template wrote the special tokens
    order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))  # similar lengths together: less padding
    outputs = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        shared = min(common_prefix_length([tokens[i] for i in rows]), min(len(tokens[i]) for i in rows) - 1)
        shared = shared if shared >= min_shared and len(rows) > 1 else 0
        extra = {}
        if shared:  # the prefix once, its keys/values repeated for every row
            prefix = torch.tensor([tokens[rows[0]][:shared]], device=model.device)
            cache = model(input_ids=prefix, use_cache=True).past_key_values
            if hasattr(cache, "batch_repeat_interleave"):
                cache.batch_repeat_interleave(len(rows))
                extra["past_key_values"] = cache
            else:  # a legacy tuple of (keys, values) per layer (Unsloth's patched Llama on CUDA): the plain path
                shared = 0
        width = max(len(tokens[i]) for i in rows) - shared
        pad = tokenizer.pad_token_id
        # [shared prefix][left padding][rest of the prompt]: every row ends at the same position.
        ids = [tokens[i][:shared] + [pad] * (width - len(tokens[i]) + shared) + tokens[i][shared:] for i in rows]
        mask = [[1] * shared + [0] * (width - len(tokens[i]) + shared) + [1] * (len(tokens[i]) - shared)
                for i in rows]
        ids, mask = torch.tensor(ids, device=model.device), torch.tensor(mask, device=model.device)
        stop = StoppingCriteriaList([StopWhenHopeless(tokenizer, ids.shape[1], hopeless)] if hopeless else [])
        new = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             stopping_criteria=stop, pad_token_id=pad,
                             logits_processor=LogitsProcessorList([constraint()] if constraint else []),
                             **extra)[:, ids.shape[1]:]
        for i, text in zip(rows, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            outputs[i] = text.strip()
    model.train(was_training)
    if router_logits:
        model.config.output_router_logits = True
    return outputs


# Each task's metric, and the test that stops generating an answer which can no longer score.
TASK_SCORING = {"extract": (score, not_json), "describe": (describe_score, not_one_line)}


def evaluate(model, tokenizer, examples: list[dict], generator=None, **generate_kwargs) -> tuple[dict, list[str]]:
    """Score the model on SFT-format `examples` of one task (extract or describe, read from the system prompt)
    with that task's metric; return (scores, predictions). `generator` replaces `generate` for a model that is
    not a PyTorch one (`ftlab.gguf.generate` for a llama.cpp model), with the same prompts and metric."""
    tasks = {task_of(ex["messages"]) for ex in examples}
    if len(tasks) != 1:
        raise ValueError(f"an eval set holds one task, this one holds {sorted(tasks)}")
    metric, hopeless = TASK_SCORING[tasks.pop()]
    prompts = [ex["messages"][:-1] for ex in examples]
    predictions = (generator or generate)(model, tokenizer, prompts, hopeless=hopeless, **generate_kwargs)
    return metric(predictions, [gold_of(ex) for ex in examples]), predictions


def ask(model, tokenizer, questions: list[dict], max_new_tokens: int = 32, batch_size: int = 32
        ) -> tuple[dict, list[str]]:
    """The forgetting probe: general questions as a plain user turn (no task prompt); (score, replies)."""
    prompts = [[{"role": "user", "content": q["question"]}] for q in questions]
    replies = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return probe_score(replies, questions), replies


def evaluate_all(model, tokenizer, eval_sets: dict[str, list[dict]], questions: list[dict] | None = None,
                 *, max_new_tokens: int = 80, batch_size: int = 32, bf16: bool = False, fp16: bool = False,
                 constraint=None) -> tuple[dict, dict]:
    """(scores, answers), each keyed by eval-set name, plus "probe" when `questions` are given.

    Before and after training are scored with the same arithmetic on every device (after `train()`, accelerate
    has wrapped `model.forward` in the run's autocast; before it, nothing has):
    - on a CPU, generation runs on a copy of the model (the trained weights stay as they are) set up for it: in
      bf16 when `bf16` (on a bf16-capable CPU that halves the time; autocast, which re-casts every weight at every
      new token, was slower than fp32), with a LoRA adapter merged into the copy's weights (unmerged, every layer
      runs two extra small matmuls per token: scoring took 135 s instead of 69 s), with plain ("eager") attention
      (~1.3x faster than PyTorch's fused attention for one new token at a time against a cache on a CPU), and
      without accelerate's wrapper. These are CPU speed-ups, tested equal on the CPU only;
    - on a GPU (or an Apple GPU) the model itself generates, under the run's autocast (`bf16`/`fp16`) both
      times: the library's documented path, with accelerate's wrapper (the same autocast again) or without it.
    A 4/8-bit model is scored as it is on any device: it cannot be recast. `constraint` (see `generate`) applies to
    the eval sets, not to the general questions."""
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    autocast = contextlib.nullcontext()
    if model.device.type == "cpu" and not quantized:
        model = copy.deepcopy(model)
        if hasattr(model, "merge_and_unload") and not has_soft_prompt(model):
            model = model.merge_and_unload()  # LoRA folded into the copy's weights: same function, no extra matmuls
        model = model.to(torch.bfloat16 if bf16 else model.dtype)
        model.set_attn_implementation("eager")
        # After training, accelerate has wrapped model.forward in autocast (+ a cast of the outputs to fp32);
        # the copy drops that wrapper and runs in its own dtype: with it, scoring took 3x as long.
        private_apis.check("accelerate")  # the wrapper's attribute names are accelerate's: checked for this version
        for wrapper in private_apis.ACCELERATE_AUTOCAST_WRAPPER:
            model.__dict__.pop(wrapper.attr, None)
    elif model.device.type != "cpu" and (bf16 or fp16):
        autocast = torch.autocast(model.device.type, dtype=torch.bfloat16 if bf16 else torch.float16)
    scores, answers = {}, {}
    with autocast:
        for name, examples in eval_sets.items():
            scores[name], answers[name] = evaluate(model, tokenizer, examples, max_new_tokens=max_new_tokens,
                                                   batch_size=batch_size, constraint=constraint)
        if questions:
            scores["probe"], answers["probe"] = ask(model, tokenizer, questions, batch_size=batch_size)
    return scores, answers


class Scored(NamedTuple):
    """A model's scores on a script's eval sets (and the probe), with the answers they were computed from."""

    scores: dict
    answers: dict


def score_task(label: str, model, tokenizer, data, args, training_args) -> Scored | None:
    """`evaluate_all` on a script's `TaskData` with its settings (`args`: its `TaskArguments`; `training_args`: the
    eval batch size and number format), and one line of results for the console. Label "before" under
    `--eval_before false` scores nothing and returns None."""
    if label == "before" and not getattr(args, "eval_before", True):
        return None
    start = time.perf_counter()
    scores, answers = evaluate_all(model, tokenizer, data.eval_sets, data.questions,
                                   max_new_tokens=args.max_new_tokens,
                                   batch_size=training_args.per_device_eval_batch_size, bf16=training_args.bf16,
                                   fp16=training_args.fp16)
    print(f"{label}: exact match " + ", ".join(f"{scores[n]['exact_match']:.0%} {n}" for n in data.eval_sets)
          + (f"; general questions {scores['probe']['correct']:.0%}" if data.questions else "")
          + f" ({time.perf_counter() - start:.0f} s); first answer: {answers['synthetic'][0]!r}")
    return Scored(scores, answers)
