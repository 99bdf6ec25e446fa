"""Preference optimisation without a reward model: DPO (and its relatives KTO and ORPO) on answer pairs.

RLHF trains a reward model, then runs RL against it. DPO (Rafailov et al., 2023) showed that the same
objective, "score preferred answers higher, but stay close to the starting model", can be optimised
directly on the pairs: raise the policy's log-probability of the chosen answer relative to a frozen
reference copy, lower it for the rejected one. The implicit reward of an answer is
beta * log(pi(answer) / pi_ref(answer)); TRL logs its accuracy and margin on the pairs as it trains.
- `beta` is how far from the reference the model may go (small: far; large: stays close);
- `loss_type` picks the curve applied to the margin: sigmoid (DPO), ipo, hinge, and others (see dpo.yaml);
- `--use_peft true`: only a LoRA adapter trains, and the reference is the same model with it switched off
  (no second copy in memory).
Two relatives are config switches (`method:` in the YAML): KTO learns from answers labelled good or bad
one at a time, no pairs needed (kto.yaml); ORPO needs no reference model at all, adding an odds-ratio
term to plain SFT loss (orpo.yaml).

Run from the repository root (inside .venv), ideally from a short SFT run (see this folder's README):

    python 03_rlhf/train_dpo.py --config 03_rlhf/dpo.yaml --model_name_or_path runs/03_sft
    python 03_rlhf/train_dpo.py --config 03_rlhf/dpo.yaml --loss_type ipo --beta 0.5    # another loss
    python 03_rlhf/train_dpo.py --config 03_rlhf/kto.yaml --model_name_or_path runs/03_sft  # KTO
    python 03_rlhf/train_dpo.py --config 03_rlhf/orpo.yaml                                  # ORPO, from the base

Scores the task before and after (exact JSON on the eval sets, general questions) and writes the model,
metrics.json (with reward accuracy and margins on held-out pairs), predictions.jsonl and loss_curve.png.
"""

import sys
from dataclasses import dataclass, field

try:  # a learner who runs the script outside .venv gets one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, peek, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

METHODS = ("dpo", "kto", "orpo")


@dataclass
class ScriptArguments(TaskArguments):
    method: str = field(default="dpo", metadata={"help": "dpo | kto | orpo (each has its own YAML in this folder)"})
    preference_file: str | None = field(default=None, metadata={"help": "preference JSONL; default data/preference.jsonl"})
    eval_pairs: int = field(default=70, metadata={"help": "last N pairs held out for reward accuracy and margins"})


def trainer_classes(method: str):
    """(config class, trainer class) of a method: TRL keeps ORPO among its experimental trainers."""
    if method not in METHODS:
        fail(f"--method {method!r}: must be one of {', '.join(METHODS)}")
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOConfig, ORPOTrainer


def unpaired(dataset, shuffle_seed: int | None = None):
    """KTO's rows: each pair gives its chosen answer (label True) and its rejected one (label False), interleaved,
    so every stretch of rows holds both kinds. TRL's `unpair_preference_dataset` lists all the chosen answers,
    then all the rejected ones, and KTO reads its training rows in order (its KL estimate pairs each row with its
    neighbour): 20 steps of 8 would see only good answers. Training rows are then shuffled (neighbours from
    different prompts, for that KL estimate); held-out rows stay in pairs, a pair's two answers side by side."""
    from datasets import Dataset

    rows = [{"prompt": pair["prompt"], "completion": pair[kind], "label": kind == "chosen"}
            for pair in dataset for kind in ("chosen", "rejected")]
    rows = Dataset.from_list(rows)
    return rows if shuffle_seed is None else rows.shuffle(seed=shuffle_seed)


def evaluate_pairs(trainer, method: str, pairs: int) -> tuple[dict, dict]:
    """The implicit reward on the held-out pairs, one pair per eval batch. TRL averages its metrics over eval
    batches, not rows: with batches of 32, 32 and 6 pairs, a pair in the last batch would weigh five times one in
    the others. One pair a batch (KTO: its chosen and its rejected row) makes TRL's mean a mean over pairs, and
    DPO's and ORPO's accuracy x pairs a count."""
    args = trainer.args
    batch_size, args.per_device_eval_batch_size = args.per_device_eval_batch_size, 2 if method == "kto" else 1
    try:
        metrics = trainer.evaluate()
    finally:
        args.per_device_eval_batch_size = batch_size  # the task scoring's generation batch
    summary = {"pairs": pairs, "mean_margin": metrics["eval_rewards/margins"]}
    if "eval_rewards/accuracies" in metrics:  # KTO logs none: it never compares two answers itself
        summary["chosen_above_rejected"] = round(metrics["eval_rewards/accuracies"] * pairs)
    line = f"held-out pairs ({pairs}): mean implicit-reward margin {summary['mean_margin']:.3f}"
    if "chosen_above_rejected" in summary:
        line += f", chosen above rejected in {summary['chosen_above_rejected']} of {pairs}"
    print(line)
    return metrics, summary


def main():
    import torch
    from trl import ModelConfig

    # ---- 1. Config: the method picks the config class; then dataclasses <- YAML <- flags ------------------
    method = peek("method", "dpo")
    config_class, trainer_class = trainer_classes(method)
    script_args, training_args, model_args = parse_config(ScriptArguments, config_class, ModelConfig)

    from trl import get_peft_config

    from ftlab.checkpoints import protect
    from ftlab.data import load_preference, load_task, preference_dataset
    from ftlab.evaluation import score_task
    from ftlab.models import load_causal_lm
    from ftlab.report import summarize
    from ftlab.resources import measure_training
    from ftlab.trl_cpu import install

    install()  # TRL's DPO/KTO log-probabilities, on a CPU or a Mac too (ftlab/trl_cpu.py)
    prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                       resume=script_args.resume)
    torch.manual_seed(training_args.seed)

    # ---- 2. Model (the policy; DPO and KTO copy it as the frozen reference, or switch LoRA off) -----------
    model, tokenizer = load_causal_lm(model_args, training_args.device)

    # ---- 3. Data: preference pairs to learn from; the task's eval sets to score ---------------------------
    train_pairs, held_out = load_preference(script_args.preference_file, script_args.eval_pairs)
    data = load_task(script_args)
    train_dataset, eval_dataset = preference_dataset(train_pairs), preference_dataset(held_out)
    if method == "kto":  # KTO wants single answers marked good (label True) or bad: each pair gives one of each
        train_dataset, eval_dataset = unpaired(train_dataset, training_args.seed), unpaired(eval_dataset)
    print(f"data: {len(train_dataset)} training rows ({method}), {len(eval_dataset)} held out; {data.describe()}")

    # ---- 4. Evaluate the starting model ---------------------------------------------------------------------
    before = score_task("before", model, tokenizer, data, script_args, training_args)  # None: --eval_before false

    # ---- 5. Train ---------------------------------------------------------------------------------------------
    trainer = trainer_class(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            processing_class=tokenizer, peft_config=get_peft_config(model_args))
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*
    preference_eval, held_out_pairs = evaluate_pairs(trainer, method, len(held_out))  # implicit reward, per pair

    # ---- 6. Evaluate, report, save ----------------------------------------------------------------------------
    after = score_task("after", trainer.model, tokenizer, data, script_args, training_args)
    summarize(f"03_rlhf {method}" + (" (LoRA)" if model_args.use_peft else ""), trainer, result, data, before, after,
              extra={"method": method, "beta": training_args.beta,
                     "loss_type": getattr(training_args, "loss_type", None), "preference_eval": preference_eval,
                     "held_out_pairs": held_out_pairs})
    trainer.save_model(training_args.output_dir)  # the whole policy, or only the adapter with --use_peft
    print(f"saved model to {training_args.output_dir}")


if __name__ == "__main__":
    main()
