"""RLHF, stage 2: a reward model that scores an answer, trained on pairs where a person said which is better.

InstructGPT's pipeline is SFT (02_sft) -> reward model (this script) -> RL against the reward model
(train_rl.py). The reward model is the language model with its output layer swapped for a single number
(a sequence-classification head, `num_labels=1`) read at the last token. It never sees a "right" score,
only pairs: the loss -log sigmoid(r(chosen) - r(rejected)) (Bradley-Terry) pushes the preferred answer's
score above the other's. Its test is pairwise accuracy on held-out pairs, read here per kind of mistake:
a format mistake (prose, a ``` fence, YAML) is easy to see; a made-up city needs the text read.

Run from the repository root (inside .venv; see the README of this folder for the whole pipeline):

    python 03_rlhf/train_reward.py --config 03_rlhf/reward.yaml                                  # from the base model
    python 03_rlhf/train_reward.py --config 03_rlhf/reward.yaml --model_name_or_path runs/03_sft  # from an SFT run
    python 03_rlhf/train_reward.py --config 03_rlhf/reward.yaml --max_steps 4 --output_dir runs/03_reward_try

Writes the reward model (what train_rl.py loads), metrics.json with accuracy before/after per kind of
mistake, examples with their scores, and loss_curve.png to --output_dir.
"""

import sys
from dataclasses import dataclass, field

try:  # a learner who runs the script outside .venv gets one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ScriptArguments(TaskArguments):
    preference_file: str | None = field(default=None, metadata={"help": "preference JSONL; default data/preference.jsonl"})
    eval_pairs: int = field(default=70, metadata={"help": "last N pairs held out (the committed file: 10 per kind)"})


def pair_rewards(trainer, dataset):
    """The model's score of each held-out pair's chosen and rejected answer, tokenized as RewardTrainer trains."""
    import torch

    model, rewards = trainer.model, []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader(dataset):  # rows: the batch's chosen answers, then its rejected ones
            scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            chosen, rejected = scores.squeeze(-1).float().chunk(2)
            rewards += zip(chosen.tolist(), rejected.tolist(), strict=True)
    model.train(was_training)
    return rewards


def show_examples(held_out: list[dict], rewards: list[tuple[float, float]]) -> list[dict]:
    """Print one held-out pair of an easy, a subtle and a needs-reading kind of mistake with the scores of its
    answers; return them for metrics.json."""
    examples = []
    for kind in ("prose", "wrong_type", "hallucinated_value"):  # one easy, one subtle, one that needs reading
        i = next((i for i, p in enumerate(held_out) if p["error"] == kind), None)
        if i is None:
            continue
        chosen, rejected = rewards[i]
        examples.append({"error": kind, "chosen": held_out[i]["chosen"][0]["content"], "chosen_reward": chosen,
                         "rejected": held_out[i]["rejected"][0]["content"], "rejected_reward": rejected})
        print(f"\n[{kind}] margin {chosen - rejected:+.2f}\n  chosen   {chosen:+6.2f}  {examples[-1]['chosen'][:90]!r}"
              f"\n  rejected {rejected:+6.2f}  {examples[-1]['rejected'][:90]!r}")
    return examples


def main():
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import ModelConfig, RewardConfig

    # ---- 1. Config: dataclasses <- reward.yaml <- command-line flags ------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, RewardConfig, ModelConfig)

    from trl import RewardTrainer, get_peft_config

    from ftlab.checkpoints import protect
    from ftlab.data import load_preference, preference_dataset
    from ftlab.metrics import accuracy_by_kind
    from ftlab.models import load_causal_lm
    from ftlab.report import run_facts, save_metrics
    from ftlab.resources import count_parameters, measure_training

    prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                       resume=script_args.resume)
    torch.manual_seed(training_args.seed)  # the new score head starts random: seed it

    # ---- 2. Model: the language model's body with a one-number head -------------------------------------
    # Starting from the SFT model (InstructGPT did) gives a body that already reads our prompts and answers.
    model, tokenizer = load_causal_lm(model_args, training_args.device,
                                      auto_class=AutoModelForSequenceClassification, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token that is not padding

    # ---- 3. Data: (prompt, chosen, rejected); the last pairs held out, 10 of each kind of mistake --------
    train_pairs, held_out = load_preference(script_args.preference_file, script_args.eval_pairs)
    train_dataset, eval_dataset = preference_dataset(train_pairs), preference_dataset(held_out)
    print(f"data: {len(train_pairs)} training pairs, {len(held_out)} held out")

    if model_args.use_peft:  # LoRA on the body; the new head is random, so it trains in full and is saved with it
        model_args.lora_task_type = "SEQ_CLS"  # (TRL's default, CAUSAL_LM, would leave `score` frozen and unsaved)
        model_args.lora_modules_to_save = [*(model_args.lora_modules_to_save or []), "score"]
    trainer = RewardTrainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            processing_class=tokenizer, peft_config=get_peft_config(model_args))
    if len(trainer.eval_dataset) != len(held_out):
        fail(f"--max_length {training_args.max_length} drops held-out pairs: raise it")

    # ---- 4. Before: a random head ranks pairs by chance ---------------------------------------------------
    before = accuracy_by_kind(held_out, pair_rewards(trainer, trainer.eval_dataset))
    print(f"before: pairwise accuracy {before['all']:.0%} on {len(held_out)} held-out pairs")

    # ---- 5. Train -------------------------------------------------------------------------------------
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*

    # ---- 6. After: accuracy per kind of mistake, a few pairs with their scores, save ----------------------
    after_rewards = pair_rewards(trainer, trainer.eval_dataset)
    after = accuracy_by_kind(held_out, after_rewards)
    print("\n== 03_rlhf reward model: held-out pairs where chosen scores above rejected ==")
    for kind in after:
        print(f"  {kind:<20} {before[kind]:>6.0%} -> {after[kind]:>4.0%}")
    examples = show_examples(held_out, after_rewards)
    history = trainer.state.log_history
    facts = run_facts(result.metrics["train_runtime"], count_parameters(trainer.model), history)
    save_metrics(training_args.output_dir, {"technique": "03_rlhf reward model", "pairwise_accuracy_before": before,
                                            "pairwise_accuracy_after": after, "examples": examples, **facts}, history)
    if model_args.use_peft:  # the adapter merged into the body: one whole model, the folder train_rl.py loads
        trainer.model.merge_and_unload().save_pretrained(training_args.output_dir)
        tokenizer.save_pretrained(training_args.output_dir)
    else:
        trainer.save_model(training_args.output_dir)  # model + tokenizer: train_rl.py loads this folder
    print(f"saved reward model to {training_args.output_dir}")


if __name__ == "__main__":
    main()
