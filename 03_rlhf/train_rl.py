"""RLHF, stage 3: reinforcement learning from feedback, online. The model writes answers, a reward scores them.

For each prompt the policy samples a group of answers (`num_generations`). Each is scored by the reward
model of train_reward.py (RLHF proper), by a program that checks it against the gold JSON (RL with
verifiable rewards, ftlab/rewards.py), or by both. An answer's advantage says how far it beat its siblings,
and the policy gradient raises the probability of answers with a positive one:
- GRPO, one reward: the reward minus its group's mean, divided by the group's std (`scale_rewards`);
- GRPO, two rewards with `multi_objective_aggregation: normalize_then_sum` (rl.yaml): each reward is
  standardised within its group, the results are summed, and the sum is standardised across the whole batch;
  `scale_rewards` plays no part. A group whose answers tie on the JSON reward is ranked by the reward model
  alone, at full scale, however small its differences (ftlab/rewards.py: `grpo_advantages`);
- RLOO: the summed reward (less beta x the answer's KL) minus the mean of the *other* answers.
InstructGPT ran PPO here, which also trains a value model as large as the
policy to estimate that baseline; the group is the baseline now, so there is no value model to train or
hold in memory. That is why TRL 1.x ships GRPO and RLOO and no PPO.
- `beta` > 0 adds a KL penalty to a frozen copy of the starting model (logged as `kl`): the leash that
  keeps the policy from drifting into text the reward model was never trained on (reward hacking);
- `rewards: model | json | model+json`, and `multi_objective_aggregation` for how two rewards combine.
Watch `reward` climb, `kl` stay small and `completions/mean_length` stay near the answer's length
(~50 tokens): a rising reward with a rising length or KL is the policy gaming the reward. `tied_groups/*`
(logged by this script) is the share of groups whose answers all scored the same: they teach nothing.

Run from the repository root (inside .venv), after train_reward.py (see this folder's README):

    python 03_rlhf/train_rl.py --config 03_rlhf/rl.yaml --model_name_or_path runs/03_sft
    python 03_rlhf/train_rl.py --config 03_rlhf/rl.yaml --rewards json        # verifiable reward only, no reward model
    python 03_rlhf/train_rl.py --config 03_rlhf/rl.yaml --method rloo --beta 0.05   # RLOO instead of GRPO

Scores the task before and after, and writes the model, metrics.json, predictions.jsonl, loss_curve.png
and reward_curve.png (reward, KL and completion length per step) to --output_dir.
"""

import sys
from dataclasses import dataclass, field

try:  # a learner who runs the script outside .venv gets one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, peek, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

METHODS = ("grpo", "rloo")


@dataclass
class ScriptArguments(TaskArguments):
    method: str = field(default="grpo", metadata={"help": "grpo | rloo"})
    rewards: str = field(default="model+json", metadata={"help": "model (the reward model), json (ftlab/rewards.py), "
                                                                  "or model+json"})
    reward_model: str = field(default="runs/03_reward", metadata={"help": "folder train_reward.py saved"})
    prompts_file: str | None = field(default=None, metadata={"help": "RL prompts JSONL; default data/rl_prompts.jsonl"})


REWARDS = ("model", "json", "model+json")


def reward_functions(script_args, training_args) -> list:
    """What scores each sampled answer, as TRL takes it: the reward model's folder (TRL loads it as
    AutoModelForSequenceClassification, with its tokenizer), the verifiable reward's function, or both."""
    from pathlib import Path

    from transformers import AutoConfig

    from ftlab.rewards import verifiable_reward

    if script_args.rewards not in REWARDS:
        fail(f"--rewards {script_args.rewards!r}: must be one of {', '.join(REWARDS)}")
    chosen, reward_funcs = script_args.rewards.split("+"), []
    if "model" in chosen:  # a folder train_reward.py wrote: a one-number head
        rm = Path(script_args.reward_model)
        if not (rm / "config.json").is_file():
            fail(f"--reward_model {rm}: no model there; run 03_rlhf/train_reward.py first, or use --rewards json")
        if getattr(AutoConfig.from_pretrained(rm), "num_labels", None) != 1:
            fail(f"--reward_model {rm}: not a reward model (it needs one output, num_labels=1)")
        reward_funcs.append(str(rm))
    if "json" in chosen:
        reward_funcs.append(verifiable_reward)
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(reward_funcs):
        fail(f"--reward_weights has {len(training_args.reward_weights)} values for {len(reward_funcs)} rewards")
    return reward_funcs


def log_tied_groups(trainer) -> None:
    """Log, at every step, the share of groups whose answers all scored the same, per reward and on their sum
    (`tied_groups/<reward>`, `tied_groups/total`, with the trainer's metrics: log history, TensorBoard). Such a
    group has nothing to compare and teaches nothing. TRL's own `frac_reward_zero_std` cannot show it under
    `normalize_then_sum`: there it is the std of the whole batch, 0 only when every group is tied."""
    from ftlab.rewards import tied_groups

    calculate = trainer._calculate_rewards  # TRL's: the rewards of one batch of answers, (answers, rewards)

    def calculate_and_count(*args, **kwargs):
        rewards_per_func = calculate(*args, **kwargs)
        if trainer.model.training:  # training batches: num_generations answers per prompt, side by side
            shares = tied_groups(rewards_per_func.cpu(), trainer.num_generations, trainer.reward_func_names,
                                 trainer.reward_weights.cpu())
            for name, share in shares.items():
                trainer._log_metric(f"tied_groups/{name}", share)  # averaged over each logging step, like `kl`
        return rewards_per_func

    trainer._calculate_rewards = calculate_and_count


def save_reward_curve(log_history: list[dict], rewards: dict[str, str], path) -> None:
    """reward_curve.png: the mean rewards, the KL to the reference and the completion length, per step."""
    from ftlab.report import save_curves

    save_curves(log_history, path, {"mean reward": rewards, "KL to the reference": {"kl": "kl"},
                                    "completion tokens": {"completions/mean_length": "mean length"}})
    print(f"                {path}")


def main():
    import torch
    from datasets import Dataset
    from trl import ModelConfig

    # ---- 1. Config: the method picks the config class; then dataclasses <- rl.yaml <- flags ---------------
    method = peek("method", "grpo")
    if method not in METHODS:
        fail(f"--method {method!r}: must be grpo or rloo")
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trainer_class = (GRPOConfig, GRPOTrainer) if method == "grpo" else (RLOOConfig, RLOOTrainer)
    script_args, training_args, model_args = parse_config(ScriptArguments, config_class, ModelConfig)

    from trl import get_peft_config

    from ftlab.checkpoints import protect
    from ftlab.data import DATA_DIR, load_task, read_jsonl
    from ftlab.evaluation import score_task
    from ftlab.models import load_causal_lm
    from ftlab.report import summarize
    from ftlab.resources import measure_training
    from ftlab.trl_cpu import install

    install()  # TRL's GRPO/RLOO log-probabilities, on a CPU or a Mac too (ftlab/trl_cpu.py)
    reward_funcs = reward_functions(script_args, training_args)  # --rewards: model, json, or model+json
    out = prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                             resume=script_args.resume)
    torch.manual_seed(training_args.seed)

    # ---- 2. Model: the policy (with beta > 0, TRL keeps a frozen copy as the KL reference) --------------------
    model, tokenizer = load_causal_lm(model_args, training_args.device)
    tokenizer.padding_side = "left"  # generation appends to the right: prompts end at the same position

    # ---- 3. Data: prompts with their gold JSON (the verifiable reward reads the `answer` column) ---------------
    prompts = read_jsonl(script_args.prompts_file or DATA_DIR / "rl_prompts.jsonl", "rl")
    data = load_task(script_args)
    print(f"data: {len(prompts)} prompts, {training_args.num_generations} answers sampled per prompt; "
          f"rewards: {script_args.rewards}; {data.describe()}")

    # ---- 4. Evaluate the starting model ------------------------------------------------------------------------
    before = score_task("before", model, tokenizer, data, script_args, training_args)  # None: --eval_before false

    # ---- 5. Train: sample, score, compare within the group, update ------------------------------------------
    trainer = trainer_class(model=model, reward_funcs=reward_funcs, args=training_args,
                            train_dataset=Dataset.from_list(prompts), processing_class=tokenizer,
                            peft_config=get_peft_config(model_args))
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    log_tied_groups(trainer)  # per step: the share of groups whose answers all scored the same (no signal)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*

    # ---- 6. Evaluate, report (reward, KL and length per step: is the policy gaming the reward?), save ----------
    after = score_task("after", trainer.model, tokenizer, data, script_args, training_args)
    history = trainer.state.log_history
    rewards = {"reward": "total", **{f"rewards/{name}/mean": name for name in trainer.reward_func_names}}
    tied = [f"tied_groups/{name}" for name in [*trainer.reward_func_names, "total"]]
    per_step = {key: [h[key] for h in history if key in h] for key in [*rewards, "kl", "completions/mean_length", *tied]}
    summarize(f"03_rlhf {method} ({script_args.rewards})", trainer, result, data, before, after,
              extra={"method": method, "rewards": script_args.rewards, "beta": training_args.beta, "per_step": per_step})
    save_reward_curve(history, rewards, out / "reward_curve.png")
    trainer.save_model(str(out))
    print(f"saved model to {out}")


if __name__ == "__main__":
    main()
