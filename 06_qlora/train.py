"""QLoRA: LoRA adapters on a base model stored in 4-bit NF4.

LoRA (05_peft_lora) already freezes the base; QLoRA also shrinks it. Each frozen weight is stored as a
4-bit code into a 16-value table (NF4: values spaced for normally distributed weights), in blocks of 64
with one scale per block, and the scales are themselves quantized to 8 bits ("double quantization").
That is ~4.1 bits per weight instead of 16. For every matmul the block is dequantized to the compute
dtype (bf16 on a GPU), so the maths stays 16-bit while the memory is 4-bit; the adapters train in full
precision. The price is time: dequantizing costs work at every step.

Run from the repository root inside the project's environment (`make setup`; `source .venv/bin/activate`):

    python 06_qlora/train.py --config 06_qlora/config.yaml
    python 06_qlora/train.py --config 06_qlora/config.yaml --resume true

Writes the adapter, merged/ (the adapter merged into a 16-bit reload of the base: merging into 4-bit
weights would round the update away), metrics.json, predictions.jsonl and loss_curve.png to --output_dir.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ScriptArguments(TaskArguments):
    save_merged: bool = field(default=True, metadata={"help": "also save the adapter merged into a 16-bit base"})
    gpu_optim: str = field(default="paged_adamw_8bit", metadata={
        "help": "optimizer on a CUDA GPU (paged 8-bit AdamW: 8-bit moments, paged out to CPU memory under "
                "pressure); on a CPU `optim` is used, as bitsandbytes' paged optimizers need CUDA"})


def main():
    import torch
    from trl import ModelConfig, SFTConfig

    # ---- 1. Config ---------------------------------------------------------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)
    if not (model_args.use_peft and model_args.load_in_4bit):
        fail("06_qlora trains LoRA on a 4-bit base: use_peft and load_in_4bit must be true (16-bit LoRA is 05)")

    from peft import get_peft_model
    from transformers.training_args import OptimizerNames
    from trl import get_peft_config

    from ftlab.checkpoints import protect
    from ftlab.data import load_task
    from ftlab.evaluation import score_task
    from ftlab.models import load_causal_lm, merge_saved_adapter, save_adapter
    from ftlab.quantization import nf4_config
    from ftlab.report import summarize
    from ftlab.resources import count_parameters, measure_training
    from ftlab.trl_cpu import SFTTrainer

    if training_args.device.type == "cpu" and training_args.eval_strategy != "no":
        fail("--eval_strategy: on a CPU an eval-loss pass repacks the 4-bit weights into an inference-only format "
             "and training after it loses gradients (see step 3); use --eval_strategy no")
    out = prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                             resume=script_args.resume)
    device = training_args.device
    if device.type == "cuda":
        training_args.optim = OptimizerNames(script_args.gpu_optim)
    print(f"optimizer: {training_args.optim.value}" + ("" if device.type == "cuda" else
          " (on a CPU: bitsandbytes' paged 8-bit optimizers need CUDA)"))

    # ---- 2. The base in 4-bit, and what that saves -----------------------------------------------------------
    compute = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    quantization = nf4_config(compute, quant_type=model_args.bnb_4bit_quant_type,  # nf4 (or fp4)
                              double_quant=model_args.use_bnb_nested_quant,  # 8-bit block scales: ~0.37 bits/weight less
                              storage=model_args.bnb_4bit_quant_storage)

    def load_4bit():
        return load_causal_lm(model_args, quantization_config=quantization, device_map={"": device})

    model, tokenizer = load_4bit()
    data = load_task(script_args)
    full, _ = load_causal_lm(model_args)  # the same weights unquantized, to measure what 4-bit saved
    memory = base_memory(model, full)
    del full
    print(f"base weights: {memory['base_4bit_mb']:.0f} MB in 4-bit vs {memory['base_16bit_mb']:.0f} MB in 16-bit "
          f"(formula: {memory['formula_4bit_mb']:.0f} MB = {memory['quantized']:,} quantized weights x "
          f"{memory['bits_per_weight']:.3f} bits + {memory['kept']:,} kept weights x 16 bits)")

    # ---- 3. Score before, then reload: on a CPU, bitsandbytes repacks 4-bit weights for fast inference the
    # first time a layer runs in eval mode, and that format passes no gradient back: LoRA layers below it
    # would silently never train. So the scored model is thrown away and training gets a fresh one.
    print(data.describe())
    # prompt/completion pairs: the loss on the answer only (no eval set without eval_strategy: no eval loss)
    train_dataset, eval_dataset = data.sft_datasets(eval_loss=training_args.eval_strategy != "no")
    before = score_task("before", model, tokenizer, data, script_args, training_args)  # None: --eval_before false
    if before is not None and device.type == "cpu":
        del model
        model, tokenizer = load_4bit()

    # ---- 4. LoRA on every linear layer of the 4-bit base ----------------------------------------------------
    # peft's prepare_model_for_kbit_training would also cast every non-quantized weight (embeddings, norms,
    # output layer) to fp32; we keep them as loaded and only make checkpointing work with frozen inputs.
    if training_args.gradient_checkpointing:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    torch.manual_seed(training_args.seed)
    model = get_peft_model(model, get_peft_config(model_args))
    trainable, total = count_parameters(model)
    print(f"qlora: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")

    # ---- 5. Train ------------------------------------------------------------------------------------------
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset,
                         processing_class=tokenizer)
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*

    # ---- 6. Save the adapter (first: scoring takes minutes on a CPU), score it, and merge it into a 16-bit base
    adapter_mb = save_adapter(model, tokenizer, out)  # the LoRA tensors alone: the 4-bit base is not saved
    after = score_task("after", model, tokenizer, data, script_args, training_args)
    if script_args.save_merged:
        print(f"merged into a {model_args.dtype} base: {merge_saved_adapter(model_args, out, tokenizer)}")
    saved = {k: v for k, v in memory.items() if k.endswith("_mb")}  # what 4-bit saved, into metrics.json
    summarize("06_qlora", trainer, result, data, before, after, extra={
        "bf16": training_args.bf16, "adapter_mb": round(adapter_mb, 2), "optimizer": training_args.optim.value, **saved})


def base_memory(quantized, full) -> dict:
    """The base weights in 4-bit vs 16-bit (both measured: `get_memory_footprint`, the copy cast to bf16),
    and the 4-bit figure from the formula: 4 bits a weight, plus one 8-bit scale per 64 weights, plus one
    fp32 scale per 256 of those (double quantization); layers left unquantized (embeddings, norms) at 16 bits."""
    import bitsandbytes as bnb
    import torch

    quantized_weights = sum(m.weight.numel() * 2 for m in quantized.modules() if isinstance(m, bnb.nn.Linear4bit))
    total = sum(p.numel() for p in full.parameters())
    bits = 4 + 8 / 64 + 32 / (64 * 256)
    return {"base_4bit_mb": quantized.get_memory_footprint() / 1e6,
            "base_16bit_mb": full.to(torch.bfloat16).get_memory_footprint() / 1e6,
            "formula_4bit_mb": (quantized_weights * bits + (total - quantized_weights) * 16) / 8 / 1e6,
            "quantized": quantized_weights, "kept": total - quantized_weights, "bits_per_weight": bits}


if __name__ == "__main__":
    main()
