"""Supervised finetuning (SFT): teach a chat model to answer in one exact JSON form.

SFT is next-token prediction on (prompt, answer) pairs written by a person, or here by a generator.
The model already reads names, cities and dates; what it lacks is the habit of replying with exactly
our JSON and nothing else. The loss is taken on the answer tokens only (completion-only loss), so the
gradient is spent on what we want the model to write, not on re-learning the fixed system prompt.

Run (from the repository root; the default model is embedded, so this works offline on a CPU):

    python 02_sft/train.py --config 02_sft/config.yaml
    python 02_sft/train.py --config 02_sft/config.yaml --max_steps 4 --eval_samples 8   # a quick look
    python 02_sft/train.py --config 02_sft/config.yaml --use_peft --lora_r 16 --learning_rate 5e-4 \
        --output_dir runs/02_sft_lora                                                    # LoRA variant
    python 02_sft/train.py --config 02_sft/config.yaml --resume true                    # continue a run
    tensorboard --logdir runs/02_sft                                                    # watch it

Every key of config.yaml is also a flag (`--learning_rate 3e-5`); flags win over the file. The script
prints task scores before and after training, and writes the model, metrics.json, loss_curve.png and
TensorBoard logs to --output_dir.
"""

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ScriptArguments:
    train_file: str | None = field(default=None, metadata={"help": "SFT JSONL file; default data/sft_train.jsonl"})
    eval_file: str | None = field(default=None, metadata={"help": "SFT JSONL file; default data/sft_eval.jsonl"})
    eval_samples: int = field(default=50, metadata={"help": "eval examples used (0 = all): eval loss + greedy scores"})
    max_new_tokens: int = field(default=80, metadata={"help": "generation budget per answer (ours need <= 70)"})
    eval_before: bool = field(default=True, metadata={"help": "score the untrained model first"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})


def main():
    import torch
    from trl import ModelConfig, SFTConfig, TrlParser

    # ---- 1. Config: dataclasses <- config.yaml <- command-line flags --------------------------------
    parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig))
    # bf16 mixed precision where the hardware has it, plain fp32 on a CPU; a YAML key or flag still wins.
    parser.set_defaults(bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available())
    try:
        script_args, training_args, model_args = parser.parse_args_and_config()
    except ValueError as e:  # unknown key in the YAML or on the command line
        raise SystemExit(f"error: {e}")

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import get_peft_config

    from ftlab.data import DATA_DIR, DataError, read_jsonl, to_prompt_completion
    from ftlab.evaluation import evaluate
    from ftlab.models import ModelNotFound, resolve_model
    from ftlab.report import count_parameters, summarize
    from ftlab.trl_cpu import SFTTrainer  # TRL's SFTTrainer + a CPU fallback for its Triton-only loss

    out = Path(training_args.output_dir)
    if script_args.resume:
        if not out.is_dir() or get_last_checkpoint(str(out)) is None:
            raise SystemExit(f"error: --resume: no checkpoint-* folder in {out}")
    elif out.is_dir() and any(out.iterdir()):
        if not script_args.overwrite_output_dir:
            raise SystemExit(f"error: output_dir {out} is not empty; pass --overwrite_output_dir true "
                             "to replace it or --resume true to continue it")
        shutil.rmtree(out)
    torch.manual_seed(training_args.seed)  # SFTTrainer adds LoRA adapters before Trainer seeds: seed their init

    # ---- 2. Model and tokenizer ---------------------------------------------------------------------
    try:
        model_path = resolve_model(model_args.model_name_or_path)
    except ModelNotFound as e:
        raise SystemExit(f"error: {e}")
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        dtype=model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype),
        attn_implementation=model_args.attn_implementation,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    # ---- 3. Data: chat messages -> (prompt, completion) so the loss covers the answer only ------------
    # SmolLM2's chat template has no {% generation %} markers, so `assistant_only_loss` cannot find the
    # answer tokens; splitting each conversation into prompt and completion works with any template.
    try:
        train_rows = read_jsonl(script_args.train_file or DATA_DIR / "sft_train.jsonl", "sft")
        eval_rows = read_jsonl(script_args.eval_file or DATA_DIR / "sft_eval.jsonl", "sft")
    except (DataError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    eval_rows = eval_rows[: script_args.eval_samples or None]  # generation is slow: score a fixed subset
    train_dataset = Dataset.from_list([to_prompt_completion(r) for r in train_rows])
    eval_dataset = Dataset.from_list([to_prompt_completion(r) for r in eval_rows])
    print(f"data: {len(train_dataset)} train, {len(eval_dataset)} eval examples")
    print("example prompt ->", train_rows[0]["messages"][1]["content"])
    print("example answer ->", train_rows[0]["messages"][2]["content"])

    def score(label):
        scores, predictions = evaluate(model, tokenizer, eval_rows, max_new_tokens=script_args.max_new_tokens,
                                       batch_size=training_args.per_device_eval_batch_size)
        print(f"{label}: exact match {scores['exact_match']:.0%}, valid JSON {scores['valid_json']:.0%}; "
              f"first answer: {predictions[0]!r}")
        return scores, predictions

    # ---- 4. Evaluate the untrained model ---------------------------------------------------------------
    before, before_answers = score("before") if script_args.eval_before else (None, None)

    # ---- 5. Train ------------------------------------------------------------------------------------
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),  # None unless --use_peft
    )
    model = trainer.model  # with --use_peft, the PEFT wrapper around the base model
    parameters = count_parameters(model)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if script_args.resume else None)
    train_seconds = time.perf_counter() - start

    # ---- 6. Evaluate, report, save -------------------------------------------------------------------
    after, after_answers = score("after")
    summarize(training_args.output_dir, "02_sft" + (" (LoRA)" if model_args.use_peft else ""), before, after,
              train_seconds=train_seconds, parameters=parameters, log_history=trainer.state.log_history,
              examples=eval_rows, answers={"before": before_answers, "after": after_answers})
    trainer.save_model(training_args.output_dir)  # the full model, or only the adapter with --use_peft
    print(f"saved model to {training_args.output_dir}")


if __name__ == "__main__":
    main()
