"""Full finetuning with the plain `transformers.Trainer`: continued pre-training on raw prose, every weight trained.

TRL (02_sft onwards) builds on this layer: a `Trainer`, a dataset of token ids and a collator that makes
labels. Here there is no chat template and no prompt: the model reads plain paragraphs about the task's
world (people, their cities, dates and e-mail addresses; `data/prose_*.jsonl`) and learns to predict the
next token, as in pre-training, only on narrower text. This is the course's *self-supervised
finetuning*. The script measures what it does (held-out perplexity on prose about people it never saw)
and what it does not do (the JSON task, scored before and after: reading about the world is not
learning to answer in the task's format).

It also shows what training every weight costs: before training it prints this run's memory budget from
`ftlab.memory` (weights, gradients, optimizer states, activations) and after training the measured peak.
`--train_last_k_blocks k` trains only the last k transformer blocks (*partial finetuning*).

    python 01_full_finetuning/train.py --config 01_full_finetuning/config.yaml
    python 01_full_finetuning/train.py --config 01_full_finetuning/config.yaml --train_last_k_blocks 6
    python 01_full_finetuning/train.py --config 01_full_finetuning/config.yaml --resume true
    # past one device (configs/README.md): DDP, FSDP or DeepSpeed ZeRO through accelerate, unchanged script
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml 01_full_finetuning/train.py \\
        --config 01_full_finetuning/config.yaml

Writes the model, metrics.json (perplexity and task score before/after, the memory estimate beside the
measured peak), predictions.jsonl and loss_curve.png to --output_dir.
"""

import dataclasses
import math
import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import (
        TaskArguments,
        end_processes,
        fail,
        parse_config,
        prepare_shared_output_dir,
        quiet_other_processes,
    )
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ScriptArguments(TaskArguments):
    prose_train_file: str | None = field(default=None, metadata={"help": "JSONL of {text}; default data/prose_train.jsonl"})
    prose_eval_file: str | None = field(default=None, metadata={"help": "held-out prose; default data/prose_eval.jsonl"})
    block_size: int = field(default=256, metadata={"help": "tokens per training row (paragraphs packed end to end)"})
    train_last_k_blocks: int = field(default=0, metadata={"help": "0: train every weight; k: only the last k blocks"})


def main():
    from transformers import TrainingArguments
    from trl import ModelConfig

    # ---- 1. Config ---------------------------------------------------------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, TrainingArguments, ModelConfig)

    from transformers import DataCollatorForLanguageModeling, Trainer

    from ftlab.checkpoints import protect
    from ftlab.data import load_task
    from ftlab.evaluation import score_task
    from ftlab.memory import format_table, training_budget_for
    from ftlab.models import load_causal_lm
    from ftlab.report import summarize
    from ftlab.resources import count_parameters, measure_training, memory_in_use

    main_process = quiet_other_processes(training_args)  # one process per device under a launcher; one prints
    out = prepare_shared_output_dir(training_args, overwrite=script_args.overwrite_output_dir,
                                    resume=script_args.resume)
    sharded = weights_sharded(training_args)  # ZeRO-3 or FSDP: each process holds a shard of every weight

    # ---- 2. Model, and the data: raw prose cut into equal blocks (the task's eval sets only for scoring) ------
    model, tokenizer = load_causal_lm(model_args, None if sharded else training_args.device)
    prose = read_prose(script_args)
    task = load_task(script_args)
    train_dataset, eval_dataset = (blocks(prose[split], tokenizer, script_args.block_size) for split in ("train", "eval"))
    print(f"prose: {len(prose['train'])} paragraphs -> {len(train_dataset)} rows of {script_args.block_size} tokens; "
          f"held out: {len(eval_dataset)} rows")
    print("example ->", prose["train"][0]["text"])

    # ---- 3. Full or partial: which weights train ----------------------------------------------------------
    k = script_args.train_last_k_blocks
    if k:
        layers = model.model.layers
        if not 0 < k <= len(layers):
            fail(f"--train_last_k_blocks {k}: this model has {len(layers)} blocks")
        model.requires_grad_(False)  # embeddings (tied to the output layer in SmolLM2) and early blocks frozen
        for module in [*layers[-k:], model.model.norm]:
            module.requires_grad_(True)
    trainable, total = count_parameters(model)
    print(f"{'partial' if k else 'full'} finetuning: {trainable:,} trainable of {total:,} parameters "
          f"({trainable / total:.1%})")

    # ---- 4. The memory this run should need: weights, gradients, optimizer states, activations (ftlab.memory) --
    budget = training_budget_for(model, training_args, model_args, method="partial" if k else "full",
                                 seq=script_args.block_size, trainable=trainable,
                                 padded=False)  # packed blocks: no padding, so no mask, and SDPA's k/v stay grouped
    print("memory budget (estimate, per device):\n" + format_table(budget))

    # ---- 5. Before: perplexity on held-out prose, and the task ---------------------------------------------
    # (Under ZeRO-3 or FSDP each process holds a shard of the weights: the task is scored on the saved model.)
    print(task.describe())
    before = (score_task("before", model, tokenizer, task, script_args, training_args)
              if main_process and not sharded else None)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),  # labels = inputs
                      processing_class=tokenizer)
    perplexity = {"before": math.exp(trainer.evaluate()["eval_loss"]) if script_args.eval_before else None}

    # ---- 6. Train, and see what it used beside the estimate (the weights were in memory already) ----------------
    held_before = memory_in_use()
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*
    memory = compare_with_estimate(held_before, budget)
    perplexity["after"] = math.exp(trainer.evaluate()["eval_loss"])
    trainer.save_model(out)
    if not main_process:
        return

    # ---- 7. After: the task, on the saved model, and the report -----------------------------------------------
    if sharded:  # the saved model is one ordinary file: load it whole, in this process only
        model, tokenizer = load_saved_model(model_args, out)
    after = score_task("after", model, tokenizer, task, script_args, training_args)
    before_text = f"{perplexity['before']:.2f}" if perplexity["before"] else "not measured"
    print(f"held-out prose perplexity: {before_text} -> {perplexity['after']:.2f}")
    rows = training_args.world_size * training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    summarize("01_full_finetuning" + (f" (last {k} blocks)" if k else ""), trainer, result, task, before, after,
              parameters=(trainable, total),  # counted before training: a sharded trainer.model holds pieces
              tokens_seen=trainer.state.global_step * rows * script_args.block_size,  # full blocks: tokens are exact
              extra={"bf16": training_args.bf16, "perplexity_before": perplexity["before"],
                     "perplexity_after": perplexity["after"], "train_last_k_blocks": k,
                     "world_size": training_args.world_size, "zero_stage": budget.inputs["zero_stage"], **memory})
    end_processes()  # under a launcher: stop the process group's threads before Python exits


# ---- The details: prose into blocks, memory against the estimate, processes that each hold a shard -------------
def read_prose(script_args) -> dict[str, list[dict]]:
    """The prose files' paragraphs ({text}), "train" and "eval" (data/prose_*.jsonl unless given)."""
    from ftlab.data import DATA_DIR, read_jsonl

    return {split: read_jsonl(path or DATA_DIR / f"prose_{split}.jsonl", "text") for split, path in
            (("train", script_args.prose_train_file), ("eval", script_args.prose_eval_file))}


def blocks(records: list[dict], tokenizer, size: int):
    """Every paragraph + end-of-text, concatenated, cut into rows of `size` tokens (the tail that is left is dropped)."""
    from datasets import Dataset

    ids = [t for r in records for t in tokenizer(r["text"])["input_ids"] + [tokenizer.eos_token_id]]
    return Dataset.from_dict({"input_ids": [ids[i:i + size] for i in range(0, len(ids) - size + 1, size)]})


def compare_with_estimate(held_before: float, budget) -> dict:
    """Print what training added to memory (its peak minus the `held_before` GiB held before it) beside the estimate
    of what it adds (gradients + optimizer states + activations); return both, with the estimate, for metrics.json."""
    from ftlab.resources import peak_memory

    added, estimated = peak_memory()["peak_gib"] - held_before, (budget.total - budget.weights) / 2**30
    print(f"training added {added:.2f} GiB to the {held_before:.2f} GiB held before it (peak minus before); the "
          f"estimate of gradients + optimizer + activations: {estimated:.2f} GiB"
          + (f" ({estimated / added - 1:+.0%})" if added > 0 else " (the peak came before training)"))
    return {"memory_before_train_gib": round(held_before, 3), "training_added_gib": round(added, 3),
            "estimate_gib": {part: round(getattr(budget, part) / 2**30, 3) for part in
                             ("weights", "gradients", "optimizer", "activations", "total")}}


def weights_sharded(training_args) -> bool:
    """Whether each process holds only a shard of every weight (DeepSpeed ZeRO-3, or FSDP)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() or bool(training_args.fsdp)


def load_saved_model(model_args, out):
    """The model a sharded run saved in `out` (one ordinary file), loaded whole in this process: DeepSpeed's
    ZeRO-3 config is unset first, or transformers would shard the load again."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from ftlab.models import load_causal_lm

    unset_hf_deepspeed_config()
    return load_causal_lm(dataclasses.replace(model_args, model_name_or_path=str(out)))


if __name__ == "__main__":
    main()
