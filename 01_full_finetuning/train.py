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
import os
import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks the package {e.name!r}: run `make setup`, then "
                     "`source .venv/bin/activate` (Windows: .venv\\Scripts\\activate; see README, Platforms)") from None


@dataclass
class ScriptArguments(TaskArguments):
    prose_train_file: str | None = field(default=None, metadata={"help": "JSONL of {text}; default data/prose_train.jsonl"})
    prose_eval_file: str | None = field(default=None, metadata={"help": "held-out prose; default data/prose_eval.jsonl"})
    block_size: int = field(default=256, metadata={"help": "tokens per training row (paragraphs packed end to end)"})
    train_last_k_blocks: int = field(default=0, metadata={"help": "0: train every weight; k: only the last k blocks"})


def main():
    import torch
    from transformers import TrainingArguments
    from trl import ModelConfig

    # ---- 1. Config ---------------------------------------------------------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, TrainingArguments, ModelConfig)

    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer
    from transformers.integrations import is_deepspeed_zero3_enabled

    from ftlab.data import DATA_DIR, DataError, load_task, read_jsonl
    from ftlab.evaluation import score_task
    from ftlab.memory import estimate_training, format_table
    from ftlab.models import ModelNotFound, load_causal_lm
    from ftlab.report import count_parameters, memory_in_use, peak_memory, summarize, timed_train

    main_process = training_args.process_index == 0  # one process per device under a launcher
    if not main_process:  # the others train silently: one copy of every line, as on one device
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    with training_args.main_process_first():  # the first process clears the folder, the others then find it so
        out = prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                                 resume=script_args.resume)
    sharded = is_deepspeed_zero3_enabled() or bool(training_args.fsdp)  # weights split across processes

    # ---- 2. Model, and the data: raw prose cut into equal blocks (the task's eval sets only for scoring) ------
    try:
        model, tokenizer = load_causal_lm(model_args, None if sharded else training_args.device)
        prose = {split: read_jsonl(path or DATA_DIR / f"prose_{split}.jsonl", "text") for split, path in
                 (("train", script_args.prose_train_file), ("eval", script_args.prose_eval_file))}
        task = load_task(script_args)
    except (ModelNotFound, DataError) as e:
        fail(e)

    def blocks(records: list[dict]) -> Dataset:
        """Every paragraph + end-of-text, concatenated, cut into block_size rows (the tail that is left is dropped)."""
        ids = [t for r in records for t in tokenizer(r["text"])["input_ids"] + [tokenizer.eos_token_id]]
        size = script_args.block_size
        return Dataset.from_dict({"input_ids": [ids[i:i + size] for i in range(0, len(ids) - size + 1, size)]})

    train_dataset, eval_dataset = blocks(prose["train"]), blocks(prose["eval"])
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

    # ---- 4. The memory this run should need (ftlab.memory: chapter 2 of the course notes, made executable) ----
    weights_dtype = torch.float32 if model_args.dtype in (None, "auto", "float32") else getattr(torch, model_args.dtype)
    plugin = getattr(training_args, "deepspeed_plugin", None)  # set by --deepspeed or an accelerate config
    zero = int(plugin.zero_stage) if plugin else 0
    autocast = training_args.bf16 or training_args.fp16
    precision = ("mixed16" if plugin else "mixed") if weights_dtype == torch.float32 and autocast else \
        "fp32" if weights_dtype == torch.float32 else "bf16"  # (DeepSpeed: 16-bit weights + an fp32 master copy)
    budget = estimate_training(model, method="partial" if k else "full", precision=precision,
                               optimizer="adamw", batch=training_args.per_device_train_batch_size,
                               seq=script_args.block_size, gradient_checkpointing=training_args.gradient_checkpointing,
                               trainable=trainable, zero_stage=zero, gpus=training_args.world_size)
    print("memory budget (estimate, per device):\n" + format_table(budget))

    # ---- 5. Before: perplexity on held-out prose, and the task ---------------------------------------------
    # (Under ZeRO-3 or FSDP each process holds a shard of the weights: the task is scored on the saved model.)
    print(task.describe())
    before, before_answers = (score_task("before", model, tokenizer, task, script_args, training_args)
                              if script_args.eval_before and main_process and not sharded else (None, None))
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),  # labels = inputs
                      processing_class=tokenizer)
    perplexity = {"before": math.exp(trainer.evaluate()["eval_loss"]) if script_args.eval_before else None}

    # ---- 6. Train, and set what it used beside the estimate (the weights were in memory already) ----------------
    held_before = memory_in_use()
    train_seconds = timed_train(trainer, resume=script_args.resume)
    added, estimated = peak_memory()["peak_gib"] - held_before, (budget.total - budget.weights) / 2**30
    print(f"training added {added:.2f} GiB to the {held_before:.2f} GiB held before it (peak minus before); the "
          f"estimate of gradients + optimizer + activations: {estimated:.2f} GiB"
          + (f" ({estimated / added - 1:+.0%})" if added > 0 else " (the peak came before training)"))
    perplexity["after"] = math.exp(trainer.evaluate()["eval_loss"])
    trainer.save_model(out)
    if not main_process:
        return

    rows_per_step = (training_args.world_size * training_args.per_device_train_batch_size
                     * training_args.gradient_accumulation_steps)  # every row is a full block: tokens are exact
    block = script_args.block_size

    # ---- 7. After: the task, on the saved model, and the report -----------------------------------------------
    if sharded:  # the saved model is one ordinary file: load it whole, in this process only (no ZeRO-3 sharding)
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        model, tokenizer = load_causal_lm(dataclasses.replace(model_args, model_name_or_path=str(out)))
    after, after_answers = score_task("after", model, tokenizer, task, script_args, training_args)
    before_text = f"{perplexity['before']:.2f}" if perplexity["before"] else "not measured"
    print(f"held-out prose perplexity: {before_text} -> {perplexity['after']:.2f}")
    summarize(out, "01_full_finetuning" + (f" (last {k} blocks)" if k else ""), before, after,
              train_seconds=train_seconds, parameters=(trainable, total), log_history=trainer.state.log_history,
              eval_sets=task.eval_sets, questions=task.questions,
              answers={"before": before_answers, "after": after_answers},
              tokens_seen=None if script_args.resume else trainer.state.global_step * rows_per_step * block,
              extra={"bf16": training_args.bf16, "perplexity_before": perplexity["before"],
                     "perplexity_after": perplexity["after"], "train_last_k_blocks": k,
                     "world_size": training_args.world_size, "zero_stage": zero,
                     "memory_before_train_gib": round(held_before, 3), "training_added_gib": round(added, 3),
                     "estimate_gib": {part: round(getattr(budget, part) / 2**30, 3) for part in
                                      ("weights", "gradients", "optimizer", "activations", "total")}})
    if torch.distributed.is_initialized():  # under a launcher: stop the process group's threads before Python exits
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
