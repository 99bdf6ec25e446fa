"""Quantization-aware training (QAT): finetune with the rounding in the loop, so the model learns to live with it.

PTQ (quantize.py) rounds a finished model's weights and hopes the task survives. QAT rounds them while
training: in every forward pass each linear layer uses its weight rounded to the int4 grid of its group's
scale and back to a float ("fake quantization"), while the optimizer keeps updating the full-precision weight
underneath (the rounding's gradient is taken as 1, the "straight-through estimator"). The loss therefore
measures the model as int4 will compute it, and training moves the weights to where their int4 versions do
the task. At the end torchao's `convert` step does what PTQ does: rounds the weights for real and stores them.

QAT costs training, so it is compared on the same budget: from the same start (the finetuned 02_sft model),
N steps of plain finetuning followed by PTQ, against N steps of QAT followed by convert: same data, order,
seed, learning rate and bit width. Whatever separates the two is what QAT bought.

Run from the repository root inside the project's environment (`make setup`; `source .venv/bin/activate`),
after `make demo` (it trains runs/02_sft, the start):

    python 08_quantization/train_qat.py --config 08_quantization/train_qat.yaml
    python 08_quantization/train_qat.py --config 08_quantization/train_qat.yaml --scheme torchao_int8_dynamic_int4 \
        --output_dir runs/08_qat_w4a8                   # int4 weights and int8 activations
    python 08_quantization/train_qat.py --config 08_quantization/train_qat.yaml --compare_plain false   # QAT only

Writes the converted (int4) model, metrics.json, predictions.jsonl and loss_curve.png (both runs) to --output_dir.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

# The torchao PTQ configs QATConfig can train towards on a CPU (ftlab/quantization.py builds them). Refused as a QAT
# base in torchao 0.17: Int8DynamicActivationInt8WeightConfig; Int4WeightOnlyConfig's int4 kernels need CUDA.
QAT_SCHEMES = ("torchao_int4", "torchao_int8_dynamic_int4")


@dataclass
class ScriptArguments(TaskArguments):
    """Data files, eval sizes, --overwrite_output_dir (ftlab/startup.py); --eval_before scores the start model
    after PTQ (no training), rounding the same fp32 weights the two runs start from."""

    scheme: str = field(default="torchao_int4", metadata={
        "help": "what to quantize to: torchao_int4 (int4 weights, group 32) or torchao_int8_dynamic_int4 "
                "(also int8 activations per token)"})
    group_size: int = field(default=32, metadata={"help": "weights per int4 scale: smaller is finer and larger"})
    compare_plain: bool = field(default=True, metadata={
        "help": "also finetune the same steps without fake quantization, then PTQ: the same-budget comparison"})


def main():
    import torch
    from trl import ModelConfig, SFTConfig

    # ---- 1. Config ---------------------------------------------------------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)
    check_arguments(script_args, model_args.model_name_or_path)

    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    from ftlab.checkpoints import protect
    from ftlab.data import load_task
    from ftlab.evaluation import score_task
    from ftlab.models import load_causal_lm
    from ftlab.quantization import quantize_torchao, save_model, torchao_config, transformer_linears, weight_megabytes
    from ftlab.report import run_facts, save_curves, save_metrics, write_predictions
    from ftlab.resources import count_parameters, measure_training
    from ftlab.trl_cpu import SFTTrainer

    out = prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir, resume=False)
    data = load_task(script_args)
    train_dataset, _ = data.sft_datasets()
    print(data.describe())

    def base():
        """The PTQ config both runs end with (a fresh object each time: quantize_ must not share state)."""
        return torchao_config(script_args.scheme, script_args.group_size)

    def new_trainer(model, tokenizer):
        """An SFTTrainer on the same data, in the same order (the same seed) for both runs."""
        torch.manual_seed(training_args.seed)
        return SFTTrainer(model=model, args=training_args, train_dataset=train_dataset, processing_class=tokenizer)

    scores, answers, curves, dtypes = {}, {}, [], {}  # dtypes: what each row's PTQ / convert rounded

    # ---- 2. (--eval_before) The start model, PTQ'd without any training: from the same fp32 master weights the two
    # runs below quantize (quantize.py's torchao_int4 row rounds the weights loaded in bf16: not the same codes)
    if script_args.eval_before:
        model, tokenizer = load_causal_lm(model_args, training_args.device)
        dtypes["start_ptq"] = weights_dtype(model)
        quantize_torchao(model, base())
        scores["start_ptq"], answers["start_ptq"] = score_task("start + PTQ", model, tokenizer, data, script_args,
                                                               training_args)

    # ---- 3. Same budget without QAT: plain finetuning, then PTQ ---------------------------------------------
    plain_seconds = None
    if script_args.compare_plain:
        model, tokenizer = load_causal_lm(model_args, training_args.device)
        trainer = new_trainer(model, tokenizer)
        protect(trainer, resumable=False)  # Ctrl-C stops cleanly, a NaN loss stops (ftlab/checkpoints.py)
        measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
        result = trainer.train()
        plain_seconds = result.metrics["train_runtime"]
        print(f"plain finetuning: {trainer.state.global_step} steps in {plain_seconds:.0f} s")
        curves += [{"step": h["step"], "plain_loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
        dtypes["plain_then_ptq"] = weights_dtype(model)
        quantize_torchao(model, base())
        scores["plain_then_ptq"], answers["plain_then_ptq"] = score_task(
            "plain + PTQ", model, tokenizer, data, script_args, training_args)
        del model, trainer

    # ---- 4. QAT: prepare (fake-quantize the block linears) -> finetune -> convert (quantize for real) -------
    model, tokenizer = load_causal_lm(model_args, training_args.device)
    quantize_(model, QATConfig(base(), step="prepare"), filter_fn=transformer_linears)
    parameters = count_parameters(model)
    trainer = new_trainer(model, tokenizer)
    protect(trainer, resumable=False)
    measure_training(trainer)  # again: the peak memory and devices metrics.json reports are the QAT run's
    result = trainer.train()
    qat_seconds = result.metrics["train_runtime"]
    print(f"QAT: {trainer.state.global_step} steps in {qat_seconds:.0f} s")
    curves += [{"step": h["step"], "qat_loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    dtypes["qat"] = weights_dtype(model)
    quantize_torchao(model, QATConfig(base(), step="convert"))
    scores["qat"], answers["qat"] = score_task("QAT", model, tokenizer, data, script_args, training_args)

    # ---- 5. Report and save -------------------------------------------------------------------------------
    print("\n" + comparison(scores, list(data.eval_sets), plain_seconds, qat_seconds))
    disk_mb = save_model(model, tokenizer, out)
    metrics = {"technique": f"08_quantization QAT ({script_args.scheme}, group {script_args.group_size})",
               "task": "extract", "before": scores.get("start_ptq"), "after": scores["qat"],
               "ptq_after_plain_finetuning": scores.get("plain_then_ptq"), "plain_train_seconds": plain_seconds,
               "quantized_weights_dtype": dtypes,
               **run_facts(qat_seconds, parameters, trainer.state.log_history, trainer.tokens_seen),
               "disk_mb": round(disk_mb, 1), "memory_mb": round(weight_megabytes(model), 1),
               "bf16": training_args.bf16}
    save_metrics(out, metrics, [])
    save_curves(curves, out / "loss_curve.png", {"loss": {"plain_loss": "plain finetuning (then PTQ)",
                                                          "qat_loss": "QAT (fake-quantized)"}})
    write_predictions(out / "predictions.jsonl", data.eval_sets, data.questions, answers)
    print(f"saved the converted model to {out} ({disk_mb:.0f} MB of weights on disk); loss_curve.png, predictions.jsonl")


def weights_dtype(model) -> str:
    """The dtype of the block linears' weights, the ones PTQ or convert rounds ("float32", "bfloat16")."""
    from ftlab.quantization import transformer_linears

    return next(str(m.weight.dtype).removeprefix("torch.") for n, m in model.named_modules() if transformer_linears(m, n))


def check_arguments(script_args: ScriptArguments, start: str) -> None:
    """One `error:` line for what this script cannot do, before anything loads; a missing start says how to make it."""
    from pathlib import Path

    if script_args.resume:
        fail("--resume: train_qat.py runs two short trainings from the same start; run it again instead")
    if script_args.scheme not in QAT_SCHEMES:
        fail(f"--scheme {script_args.scheme!r}: QAT here trains towards {' or '.join(QAT_SCHEMES)} (torchao refuses "
             "int8 dynamic activations with int8 weights as a QAT base; its packed int4 needs CUDA)")
    if script_args.group_size < 1:
        fail(f"--group_size {script_args.group_size}: must be at least 1 (32 or 64 are usual)")
    if "02_sft" in start and not Path(start).expanduser().is_dir():
        fail(f"model path not found: {start}; the start is a finetuned model: make demo trains runs/02_sft")


def comparison(scores: dict, sets: list[str], plain_seconds: float | None, qat_seconds: float) -> str:
    """One row per run: exact match and valid JSON on each eval set, and its training time."""
    from ftlab.report import markdown_table

    labels = {"start_ptq": ("start model + PTQ", 0), "plain_then_ptq": ("plain finetuning + PTQ", plain_seconds),
              "qat": ("QAT + convert", qat_seconds)}
    header = ["run", "train s", *(column for s in sets for column in (f"{s} exact", f"{s} valid JSON"))]
    rows = [[label, f"{seconds or 0:.0f}",
             *(cell for s in sets for cell in (f"{scores[key][s]['exact_match']:.1%}", f"{scores[key][s]['valid_json']:.0%}"))]
            for key, (label, seconds) in labels.items() if key in scores]
    return markdown_table(header, rows)


if __name__ == "__main__":
    main()
