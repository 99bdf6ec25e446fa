"""LoRA: freeze the model, train a low-rank correction beside each weight matrix, and keep only that.

A weight update of a d x k matrix is learned as B @ A with B (d x r) and A (r x k), r small (16 here):
for SmolLM2's 576 x 576 attention projections that is 18,432 numbers instead of 331,776. The base
model is frozen, so it needs no gradients and no optimizer state (the Adam moments of full finetuning
cost twice the model again), and it can even sit in bf16 because it is never updated. What is saved is
the adapter alone, a few MB, which can be loaded onto the base at serving time or merged into it
(W + B @ A * alpha / r) to serve one ordinary model with no extra latency.

Run from the repository root inside the project's environment (`make setup`; `source .venv/bin/activate`):

    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --lora_r 4 --output_dir runs/05_r4
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --lora_target_modules q_proj v_proj
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --use_dora true        # DoRA
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --init_lora_weights pissa_niter_4
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --peft_method ia3 \
        --learning_rate 1e-2 --output_dir runs/05_ia3                # IA3: scaling vectors, 85x fewer weights
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --peft_method prompt_tuning \
        --learning_rate 3e-2                                         # a soft prompt instead of LoRA
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --resume true

Every key of config.yaml is also a flag; flags win. Writes the adapter (adapter_model.safetensors), the
merged model (merged/), metrics.json, predictions.jsonl and loss_curve.png to --output_dir.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

SOFT_PROMPTS = ("prompt_tuning", "prefix_tuning", "p_tuning")


@dataclass
class ScriptArguments(TaskArguments):
    peft_method: str = field(default="lora", metadata={
        "help": "lora; ia3 (a learned scale per channel of k, v and the MLP's down projection); or a soft prompt: "
                "prompt_tuning, prefix_tuning, p_tuning", "choices": ("lora", "ia3", *SOFT_PROMPTS)})
    init_lora_weights: str = field(default="true", metadata={
        "help": "true (A random, B zero: starts as the base model), gaussian, pissa / pissa_niter_4 (A, B from the "
                "weight's top singular vectors), olora (from a QR decomposition)"})
    num_virtual_tokens: int = field(default=20, metadata={"help": "soft prompts: learned vectors put before the input"})
    save_merged: bool = field(default=True, metadata={"help": "also save base + adapter merged into one model"})


def build_peft_config(script_args, model_args):
    """LoRA (TRL's ModelConfig keys: lora_r, lora_alpha, ...), IA3, or one of the soft-prompt methods."""
    from peft import IA3Config, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType
    from trl import get_peft_config

    if script_args.peft_method == "lora":
        config = get_peft_config(model_args)
        init = script_args.init_lora_weights.lower()
        config.init_lora_weights = {"true": True, "false": False}.get(init, init)
        return config
    if script_args.peft_method == "ia3":
        # IA3 (Liu et al. 2022): no new matrices, one learned vector per layer that scales the keys, the values and
        # the input of the MLP's down projection, channel by channel (starting at 1: the base model). PEFT's default
        # layers for Llama; a scale merges into its weight like LoRA's product does.
        return IA3Config(task_type=TaskType.CAUSAL_LM)
    soft = {"prompt_tuning": PromptTuningConfig, "prefix_tuning": PrefixTuningConfig, "p_tuning": PromptEncoderConfig}
    return soft[script_args.peft_method](task_type=TaskType.CAUSAL_LM, num_virtual_tokens=script_args.num_virtual_tokens)


def main():
    import torch
    from trl import ModelConfig, SFTConfig

    # ---- 1. Config ---------------------------------------------------------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)
    if not model_args.use_peft:
        fail("05_peft_lora trains an adapter: use_peft must be true (full finetuning is 02_sft)")

    from peft import get_peft_model

    from ftlab.checkpoints import protect
    from ftlab.data import load_task
    from ftlab.evaluation import score_task
    from ftlab.models import load_causal_lm, save_adapter
    from ftlab.report import summarize
    from ftlab.resources import count_parameters, folder_megabytes, measure_training
    from ftlab.trl_cpu import SFTTrainer

    out = prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                             resume=script_args.resume)
    torch.manual_seed(training_args.seed)  # the adapters' random init

    # ---- 2. Model, then the adapter around it ------------------------------------------------------------
    model, tokenizer = load_causal_lm(model_args, training_args.device)
    data = load_task(script_args)
    peft_config = build_peft_config(script_args, model_args)
    model = get_peft_model(model, peft_config)  # freezes the base; only the adapter's tensors train
    trainable, total = count_parameters(model)
    print(f"{script_args.peft_method}: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")
    # PiSSA and OLoRA start from the weights' own structure and change the base to match: keep the start,
    # so the saved adapter can be converted into a plain LoRA adapter for the untouched base.
    initial, active = None, model.peft_config["default"]
    if isinstance(getattr(active, "init_lora_weights", None), str):
        initial = out / "initial_adapter"
        if not script_args.resume:  # saved as PEFT's docs show: with the flag that marks it a plain start
            active.init_lora_weights, init = True, active.init_lora_weights
            model.save_pretrained(initial)
            active.init_lora_weights = init

    # ---- 3. Data, and the score before training (the adapter starts as a no-op: this is the base model) ---
    print(data.describe())
    # prompt/completion pairs: the loss on the answer only (no eval set without eval_strategy: no eval loss)
    train_dataset, eval_dataset = data.sft_datasets(eval_loss=training_args.eval_strategy != "no")
    before = score_task("before", model, tokenizer, data, script_args, training_args)  # None: --eval_before false

    # ---- 4. Train ------------------------------------------------------------------------------------------
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset,
                         processing_class=tokenizer)
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*

    # ---- 5. Evaluate, then save the adapter alone and the merged model ---------------------------------
    after = score_task("after", model, tokenizer, data, script_args, training_args)
    adapter_mb = save_adapter(model, tokenizer, out, path_initial_model_for_weight_conversion=initial)
    print(f"adapter: {adapter_mb:.1f} MB in {out} (load it onto the base with PeftModel.from_pretrained)")
    if script_args.save_merged and script_args.peft_method in ("lora", "ia3"):
        merged = model.merge_and_unload()  # W + B @ A * alpha / r (IA3: W scaled), adapter layers removed
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
        print(f"merged model: {folder_megabytes(out / 'merged', '*.safetensors'):.0f} MB in {out / 'merged'}")
    lora_r = model_args.lora_r if script_args.peft_method == "lora" else None
    summarize(f"05_peft_lora ({script_args.peft_method})", trainer, result, data, before, after,
              parameters=(trainable, total),  # counted before merging: merge_and_unload removes the adapter layers
              extra={"bf16": training_args.bf16, "adapter_mb": round(adapter_mb, 2),
                     "peft_method": script_args.peft_method, "lora_r": lora_r})


if __name__ == "__main__":
    main()
