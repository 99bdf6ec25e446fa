"""The same LoRA job as train.py, through Unsloth: its model loader, its adapter setup, TRL's trainer.

Unsloth rewrites the model's hot paths for NVIDIA GPUs: hand-written Triton kernels for the LoRA
matmuls, RoPE, RMSNorm and the cross-entropy (which never builds the full-vocabulary logits), and its own
gradient checkpointing that parks activations in CPU memory. The lesson here is that the *recipe* does
not change: the same data, rank, alpha, targets and learning rate go in, an adapter comes out. What
changes is speed and memory on a GPU (see README.md). Without a GPU, Unsloth falls back to plain
transformers + PEFT on the CPU (it says so when imported), so this script also runs on a laptop.

Unsloth must be imported before transformers and TRL, so that its patches are in place when they load.
It is installed on Linux only (it needs Triton); elsewhere this script says so in one line.

The same script trains QLoRA when the config says `load_in_4bit: true`, as 06_qlora/config.yaml does: Unsloth
then loads the base through bitsandbytes in NF4, as 06_qlora/train.py does, and the run reports itself as
"06_qlora (Unsloth QLoRA)". That second command is 06_qlora's Unsloth variant (06_qlora/README.md, Unsloth).

    python 05_peft_lora/train_unsloth.py --config 05_peft_lora/config.yaml --output_dir runs/05_unsloth
    python 05_peft_lora/train_unsloth.py --config 06_qlora/config.yaml --output_dir runs/06_unsloth   # QLoRA
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.platforms import missing
    from ftlab.startup import TaskArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ScriptArguments(TaskArguments):
    # train.py's keys that mean the same here are accepted; these are the ones Unsloth cannot take.
    peft_method: str = field(default="lora", metadata={"help": "Unsloth trains LoRA only"})
    init_lora_weights: str = field(default="true", metadata={"help": "Unsloth: true only"})
    num_virtual_tokens: int = field(default=20, metadata={"help": "unused (soft prompts are train.py only)"})
    save_merged: bool = field(default=True, metadata={"help": "also save base + adapter merged into one model"})
    gpu_optim: str | None = field(default=None, metadata={
        "help": "optimizer on a CUDA GPU, in place of `optim` (06's config: paged 8-bit AdamW, which needs CUDA)"})


def logged_tokens(log_history: list[dict]) -> int | None:
    """The non-padding tokens trained on, as TRL last logged them (`num_tokens`)."""
    return max((int(entry["num_tokens"]) for entry in log_history if "num_tokens" in entry), default=None)


def main():
    if problem := missing("unsloth"):
        fail(problem.replace("run the PEFT version of the same lesson", "run 05_peft_lora/train.py"))
    import torch
    import unsloth  # noqa: F401  (first: it patches transformers and TRL as they load)
    from transformers.training_args import OptimizerNames
    from trl import ModelConfig, SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    # ---- 1. Config: the same file as train.py ---------------------------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)
    if script_args.peft_method != "lora" or script_args.init_lora_weights.lower() != "true" or model_args.use_dora:
        fail("train_unsloth.py trains plain LoRA: IA3, soft prompts, PiSSA/OLoRA and DoRA are in train.py")

    from ftlab.checkpoints import protect
    from ftlab.data import load_task
    from ftlab.evaluation import score_task
    from ftlab.models import merge_saved_adapter, resolve_model, save_adapter
    from ftlab.report import summarize
    from ftlab.resources import count_parameters, measure_training

    four_bit_on_cpu = model_args.load_in_4bit and training_args.device.type == "cpu"
    if four_bit_on_cpu and training_args.eval_strategy != "no":
        fail("--eval_strategy: on a CPU an eval pass repacks 4-bit weights and training after it loses gradients "
             "(06_qlora/train.py, step 3); use --eval_strategy no")
    out = prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                             resume=script_args.resume)
    if script_args.gpu_optim and training_args.device.type == "cuda":
        training_args.optim = OptimizerNames(script_args.gpu_optim)

    # ---- 2. The model, Unsloth's way (in NF4 when load_in_4bit: QLoRA), scored before any adapter ----------
    path = resolve_model(model_args.model_name_or_path)
    data = load_task(script_args)

    def load():
        return FastLanguageModel.from_pretrained(
            model_name=path, max_seq_length=training_args.max_length, load_in_4bit=model_args.load_in_4bit,
            dtype=getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else None)

    model, tokenizer = load()
    print(data.describe())
    before = score_task("before", model, tokenizer, data, script_args, training_args)  # None: --eval_before false
    if four_bit_on_cpu and before is not None:  # the 4-bit eval-mode trap (06_qlora/train.py, step 3)
        del model
        model, tokenizer = load()

    # ---- 3. The adapter ---------------------------------------------------------------------------------
    targets = model_args.lora_target_modules
    model = FastLanguageModel.get_peft_model(
        model, r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
        target_modules=targets if isinstance(targets, str) or targets is None else list(targets),
        use_rslora=model_args.use_rslora, random_state=training_args.seed,
        use_gradient_checkpointing="unsloth" if training_args.gradient_checkpointing else False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    method = "qlora" if model_args.load_in_4bit else "lora"
    trainable, total = count_parameters(model)
    print(f"unsloth {method}: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%}); "
          f"optimizer: {training_args.optim.value}")

    # ---- 4. Train with TRL's own SFTTrainer (Unsloth has patched what it needs) -----------------------------
    # prompt/completion pairs: the loss on the answer only (no eval set without eval_strategy: no eval loss)
    train_dataset, eval_dataset = data.sft_datasets(eval_loss=training_args.eval_strategy != "no")
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset,
                         processing_class=tokenizer)
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*

    # ---- 5. Evaluate and save: the adapter, and (Unsloth's helper) the merged model ---------------------------
    after = score_task("after", model, tokenizer, data, script_args, training_args)
    adapter_mb = save_adapter(model, tokenizer, out)
    if script_args.save_merged and four_bit_on_cpu:
        # Unsloth's CPU fallback cannot merge into a 4-bit model ("not supported on CPU yet"): do what
        # 06_qlora/train.py does, and merge the saved adapter into a 16-bit reload of the base with PEFT.
        merge_saved_adapter(model_args, out, tokenizer)
    elif script_args.save_merged:
        # merged_16bit: on a 4-bit base Unsloth merges into 16-bit weights, not into the rounded 4-bit ones
        model.save_pretrained_merged(str(out / "merged"), tokenizer, save_method="merged_16bit")
    # 06's config (load_in_4bit: true) reports as 06's lesson, the way 06_qlora/README.md runs it
    technique = "06_qlora (Unsloth QLoRA)" if model_args.load_in_4bit else "05_peft_lora (Unsloth LoRA)"
    summarize(technique, trainer, result, data, before, after, tokens_seen=logged_tokens(trainer.state.log_history),
              extra={"bf16": training_args.bf16, "adapter_mb": round(adapter_mb, 2), "lora_r": model_args.lora_r,
                     "peft_method": f"{method} (unsloth)", "optimizer": training_args.optim.value})


if __name__ == "__main__":
    main()
