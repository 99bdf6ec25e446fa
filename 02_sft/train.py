"""Supervised finetuning (SFT): teach a chat model to answer in one exact JSON form.

SFT is next-token prediction on (prompt, answer) pairs written by a person, or here by a generator.
The model already reads names, cities and dates; what it lacks is the habit of replying with exactly
our JSON and nothing else. The loss is taken on the answer tokens only (completion-only loss), so the
gradient is spent on what we want the model to write, not on re-learning the fixed system prompt.

Run from the repository root, inside the project's environment (`make setup` creates it, then
`source .venv/bin/activate`, or call `.venv/bin/python`). The model is embedded: this works offline on a CPU.

    python 02_sft/train.py --config 02_sft/config.yaml
    python 02_sft/train.py --config 02_sft/config.yaml --max_steps 4 --eval_samples 8   # a quick look
    python 02_sft/train.py --config 02_sft/config.yaml --use_peft --lora_r 16 --learning_rate 2e-3 \
        --output_dir runs/02_sft_lora                      # LoRA variant (05_peft_lora teaches it properly)
    python 02_sft/train.py --config 02_sft/config.yaml --task describe \
        --output_dir runs/07_b_describe          # the second task (JSON -> one sentence), for 07_model_merging
    python 02_sft/train.py --config 02_sft/config.yaml --resume true                    # continue a run
    tensorboard --logdir runs/02_sft                                                    # watch it

Every key of config.yaml is also a flag (`--learning_rate 3e-5`); flags win over the file. The script
scores two eval sets before and after training (the generator's held-out shapes, and sentences written
by hand), asks 24 general questions before and after (what finetuning cost), and writes the model,
metrics.json, predictions.jsonl, loss_curve.png and TensorBoard logs to --output_dir.
"""

import sys
from dataclasses import dataclass

try:  # a learner who runs `python 02_sft/train.py` outside .venv gets one line, not a traceback
    from ftlab.startup import TaskArguments, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ScriptArguments(TaskArguments):
    """Data files, eval sizes, --resume, --overwrite_output_dir: shared by every lesson (ftlab/startup.py)."""


def main():
    import torch
    from trl import ModelConfig, SFTConfig

    # ---- 1. Config: dataclasses <- config.yaml <- command-line flags --------------------------------
    # Any bad input (missing file, YAML typo, unknown key, nonsense number) stops here with one `error:` line.
    # Device and precision follow the hardware (ftlab/platforms.py): bf16 where it multiplies bf16 natively.
    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)

    from trl import get_peft_config

    from ftlab.checkpoints import protect
    from ftlab.data import load_task
    from ftlab.evaluation import score_task
    from ftlab.models import load_causal_lm
    from ftlab.report import summarize
    from ftlab.resources import measure_training
    from ftlab.trl_cpu import SFTTrainer  # TRL's SFTTrainer + a path for its Triton-only loss off NVIDIA GPUs

    prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                       resume=script_args.resume)
    torch.manual_seed(training_args.seed)  # SFTTrainer adds LoRA adapters before Trainer seeds: seed their init

    # ---- 2. Model and tokenizer, on the training device already for the "before" score ----------------
    model, tokenizer = load_causal_lm(model_args, training_args.device)

    # ---- 3. Data: chat messages -> (prompt, completion) so the loss covers the answer only ------------
    # SmolLM2's chat template has no {% generation %} markers, so `assistant_only_loss` cannot find the
    # answer tokens; splitting each conversation into prompt and completion works with any template.
    # Two eval sets: the generator's held-out shapes, and sentences written by hand (never trained on).
    data = load_task(script_args)
    # prompt/completion pairs: the loss on the answer only (no eval set without eval_strategy: no eval loss)
    train_dataset, eval_dataset = data.sft_datasets(eval_loss=training_args.eval_strategy != "no")
    print(data.describe())
    print("example prompt ->", data.train[0]["messages"][1]["content"])
    print("example answer ->", data.train[0]["messages"][2]["content"])

    # ---- 4. Evaluate the untrained model ---------------------------------------------------------------
    before = score_task("before", model, tokenizer, data, script_args, training_args)  # None: --eval_before false

    # ---- 5. Train ------------------------------------------------------------------------------------
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),  # None unless --use_peft
    )
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*

    # ---- 6. Evaluate, report, save -------------------------------------------------------------------
    after = score_task("after", trainer.model, tokenizer, data, script_args, training_args)
    summarize("02_sft" + (" (LoRA)" if model_args.use_peft else ""), trainer, result, data, before, after,
              extra={"bf16": training_args.bf16})
    trainer.save_model(training_args.output_dir)  # the full model, or only the adapter with --use_peft
    print(f"saved model to {training_args.output_dir}")


if __name__ == "__main__":
    main()
