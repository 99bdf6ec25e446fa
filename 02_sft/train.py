"""Supervised finetuning (SFT): teach a chat model to answer in one exact JSON form.

SFT is next-token prediction on (prompt, answer) pairs written by a person, or here by a generator.
The model already reads names, cities and dates; what it lacks is the habit of replying with exactly
our JSON and nothing else. The loss is taken on the answer tokens only (completion-only loss), so the
gradient is spent on what we want the model to write, not on re-learning the fixed system prompt.

Run from the repository root, inside the project's environment (`make setup` creates it, then
`source .venv/bin/activate`, or call `.venv/bin/python`). The model is embedded: this works offline on a CPU.

    python 02_sft/train.py --config 02_sft/config.yaml
    python 02_sft/train.py --config 02_sft/config.yaml --max_steps 4 --eval_samples 8   # a quick look
    python 02_sft/train.py --config 02_sft/config.yaml --use_peft --lora_r 16 --learning_rate 5e-4 \
        --output_dir runs/02_sft_lora                                                    # LoRA variant
    python 02_sft/train.py --config 02_sft/config.yaml --resume true                    # continue a run
    tensorboard --logdir runs/02_sft                                                    # watch it

Every key of config.yaml is also a flag (`--learning_rate 3e-5`); flags win over the file. The script
scores two eval sets before and after training (the generator's held-out shapes, and sentences written
by hand), asks 24 general questions before and after (what finetuning cost), and writes the model,
metrics.json, predictions.jsonl, loss_curve.png and TensorBoard logs to --output_dir.
"""

import sys
import time
from dataclasses import dataclass, field


@dataclass
class ScriptArguments:
    train_file: str | None = field(default=None, metadata={"help": "SFT JSONL file; default data/sft_train.jsonl"})
    eval_file: str | None = field(default=None, metadata={"help": "SFT JSONL file; default data/sft_eval.jsonl"})
    eval_samples: int = field(default=40, metadata={"help": "synthetic eval examples used (0 = all): eval loss + scores"})
    handwritten_file: str | None = field(
        default=None, metadata={"help": "hand-written eval set (text + answer); default data/handwritten_eval.jsonl, "
                                        "'none' to skip"})
    probe_file: str | None = field(
        default=None, metadata={"help": "general questions asked before and after (forgetting probe); default "
                                        "data/general_probe.jsonl, 'none' to skip"})
    max_new_tokens: int = field(default=80, metadata={"help": "generation budget per answer (ours need <= 70)"})
    eval_before: bool = field(default=True, metadata={"help": "score the untrained model first"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})


def main():
    try:  # a learner who runs `python 02_sft/train.py` outside .venv gets one line, not a traceback
        from ftlab.startup import fail, parse_config, prepare_output_dir
    except ModuleNotFoundError as e:
        raise SystemExit(f"error: {sys.executable} lacks the package {e.name!r}: run `make setup`, then "
                         "`source .venv/bin/activate` (Windows: .venv\\Scripts\\activate; see README, Platforms)"
                         ) from None
    import torch
    from trl import ModelConfig, SFTConfig

    # ---- 1. Config: dataclasses <- config.yaml <- command-line flags --------------------------------
    # Any bad input (missing file, YAML typo, unknown key, nonsense number) stops here with one `error:` line.
    # Precision follows the hardware: bf16 on a GPU or a bf16-capable CPU, else fp32; `--bf16 false` wins.
    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    from ftlab.data import DATA_DIR, DataError, read_jsonl, to_prompt_completion
    from ftlab.evaluation import evaluate_all
    from ftlab.models import ModelNotFound, resolve_model
    from ftlab.report import count_parameters, summarize
    from ftlab.trl_cpu import SFTTrainer  # TRL's SFTTrainer + a CPU path for its Triton-only loss

    prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                       resume=script_args.resume)
    torch.manual_seed(training_args.seed)  # SFTTrainer adds LoRA adapters before Trainer seeds: seed their init

    # ---- 2. Model and tokenizer ---------------------------------------------------------------------
    try:
        model_path = resolve_model(model_args.model_name_or_path)
    except ModelNotFound as e:
        fail(e)
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        dtype=model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype),
        attn_implementation=model_args.attn_implementation,
    ).to(training_args.device)  # on the GPU already for the "before" score, not only once training starts
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    # ---- 3. Data: chat messages -> (prompt, completion) so the loss covers the answer only ------------
    # SmolLM2's chat template has no {% generation %} markers, so `assistant_only_loss` cannot find the
    # answer tokens; splitting each conversation into prompt and completion works with any template.
    def optional(path, default, kind):  # `--handwritten_file none` skips a set
        return [] if path and path.lower() == "none" else read_jsonl(path or DATA_DIR / default, kind)

    try:
        train_rows = read_jsonl(script_args.train_file or DATA_DIR / "sft_train.jsonl", "sft")
        eval_rows = read_jsonl(script_args.eval_file or DATA_DIR / "sft_eval.jsonl", "sft")
        handwritten = optional(script_args.handwritten_file, "handwritten_eval.jsonl", "handwritten")
        questions = optional(script_args.probe_file, "general_probe.jsonl", "probe")
    except DataError as e:
        fail(e)
    eval_rows = eval_rows[: script_args.eval_samples or None]  # generation is slow: score a fixed subset
    # Two eval sets: the generator's held-out shapes, and sentences written by hand (never trained on).
    eval_sets = {"synthetic": eval_rows, **({"handwritten": handwritten} if handwritten else {})}
    train_dataset = Dataset.from_list([to_prompt_completion(r) for r in train_rows])
    eval_dataset = Dataset.from_list([to_prompt_completion(r) for r in eval_rows])
    print(f"data: {len(train_dataset)} train examples; eval: {len(eval_rows)} synthetic, {len(handwritten)} "
          f"hand-written, {len(questions)} general questions")
    print("example prompt ->", train_rows[0]["messages"][1]["content"])
    print("example answer ->", train_rows[0]["messages"][2]["content"])

    def score(label):
        start = time.perf_counter()
        scores, answers = evaluate_all(model, tokenizer, eval_sets, questions, max_new_tokens=script_args.max_new_tokens,
                                       batch_size=training_args.per_device_eval_batch_size, bf16=training_args.bf16)
        print(f"{label}: exact match " + ", ".join(f"{scores[n]['exact_match']:.0%} {n}" for n in eval_sets)
              + (f"; general questions {scores['probe']['correct']:.0%}" if questions else "")
              + f" ({time.perf_counter() - start:.0f} s); first answer: {answers['synthetic'][0]!r}")
        return scores, answers

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
              eval_sets=eval_sets, questions=questions, answers={"before": before_answers, "after": after_answers},
              tokens_seen=None if script_args.resume else trainer.tokens_seen, extra={"bf16": training_args.bf16})
    trainer.save_model(training_args.output_dir)  # the full model, or only the adapter with --use_peft
    print(f"saved model to {training_args.output_dir}")


if __name__ == "__main__":
    main()
