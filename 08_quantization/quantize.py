"""Post-training quantization (PTQ): shrink a trained model without training it, and measure what that costs.

02_sft leaves a model in 32-bit floats: 538 MB for SmolLM2's 134.5M weights. To serve it, each method here
stores the linear layers' weights in 8 or 4 bits instead (two also round the activations to int8 at every
step), with no data and no training: it only rounds. For each method the script measures the size on disk,
the memory the weights hold, the speed of decoding one answer, and the task score on both eval sets, next to
the unquantized model, so the table answers "how much smaller, how much faster, how much worse".

Run from the repository root inside the project's environment (`make setup`; `source .venv/bin/activate`).
First the model to quantize (`make demo` trains it into runs/02_sft, ~9 minutes on a 2-core CPU):

    make demo
    python 08_quantization/quantize.py --config 08_quantization/quantize.yaml
    python 08_quantization/quantize.py --config 08_quantization/quantize.yaml \
        --methods bf16 torchao_int8_dynamic torchao_int8_dynamic_int4 --output_dir runs/08_quantize_dynamic
    python 08_quantization/quantize.py --config 08_quantization/quantize.yaml --methods bf16 bnb_nf4 \
        --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct --output_dir runs/08_quantize_base

The methods (ftlab/quantization.py describes each): fp32, bf16 (references), bnb_int8, bnb_nf4 (bitsandbytes),
torchao_int8, torchao_int4, torchao_int8_dynamic, torchao_int8_dynamic_int4 (torchao). Writes results.json,
results.md, predictions.jsonl and each quantized model (<output_dir>/<method>/, unless --save_models false).

Where it runs (the first line says): on a GPU every method quantizes, decodes and is scored there, in its 16-bit
format (bf16; fp16 on a T4, which has no bf16); on a CPU in bf16 where it multiplies it natively, else fp32.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import EvalArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

DEFAULT_METHODS = ["fp32", "bf16", "bnb_int8", "bnb_nf4", "torchao_int8", "torchao_int4"]


@dataclass
class QuantizeArguments(EvalArguments):
    model_name_or_path: str = field(default="runs/02_sft", metadata={
        "help": "the trained model folder to quantize (make demo writes runs/02_sft), or a hub id"})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={
        "help": "methods to run, in order (ftlab/quantization.py): fp32 bf16 bnb_int8 bnb_nf4 torchao_int8 "
                "torchao_int4 torchao_int8_dynamic torchao_int8_dynamic_int4"})
    output_dir: str = field(default="runs/08_quantize", metadata={"help": "results and the quantized models"})
    save_models: bool = field(default=True, metadata={"help": "save each quantized model (needed for size on disk)"})
    probe_file: str | None = field(default=None, metadata={
        "help": "general questions (forgetting probe); default data/general_probe.jsonl, 'none' to skip"})
    batch_size: int = field(default=64, metadata={"help": "generation batch while scoring"})
    decode_tokens: int = field(default=64, metadata={"help": "tokens decoded for the one-prompt speed measurement"})


def main():
    import gc
    import time
    from dataclasses import asdict
    from pathlib import Path
    from types import SimpleNamespace

    args = parse_config(QuantizeArguments)[0]
    from ftlab.quantization import METHODS

    if unknown := [m for m in args.methods if m not in METHODS]:
        fail(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")

    import torch

    from ftlab.data import load_task
    from ftlab.evaluation import evaluate_all
    from ftlab.models import resolve_model
    from ftlab.platforms import choose_to_run
    from ftlab.quantization import decode_speed, load_model, save_model, weight_megabytes
    from ftlab.report import write_predictions, write_results

    # ---- 0. Where it runs (ftlab/platforms.py), and the compute dtype: what the unquantized parts and dequantized
    # weights multiply in, the device's own 16-bit format as every lesson scores (bf16; fp16 on a GPU without bf16;
    # fp32 on a CPU without bf16). The fp32 method stays fp32: it is the reference.
    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    compute = getattr(torch, choice.dtype)
    print(f"device: {choice.device}, {choice.dtype} ({choice.why}): every method is "
          "quantized, timed and scored there", flush=True)

    # ---- 1. The trained model and the eval sets ------------------------------------------------------------
    if "02_sft" in args.model_name_or_path and not Path(args.model_name_or_path).expanduser().is_dir():
        fail(f"model path not found: {args.model_name_or_path}; train it first: make demo "
             "(python 02_sft/train.py --config 02_sft/config.yaml)")
    path = resolve_model(args.model_name_or_path)
    data = load_task(SimpleNamespace(**asdict(args), train_file=None))  # the eval sets; no training here
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)
    print(f"model: {path}; compute dtype {compute}; {data.describe()}")
    speed_prompt = data.eval_sets["synthetic"][0]["messages"][:-1]

    def save(rows, answers):
        """results.json, results.md and predictions.jsonl as they stand: rewritten after every method."""
        write_predictions(out / "predictions.jsonl", data.eval_sets, data.questions, answers)
        results = {"model": args.model_name_or_path, "device": choice.device, "compute_dtype": str(compute),
                   "rows": rows, "eval_samples": args.eval_samples, "decode_tokens": args.decode_tokens}
        write_results(out, results, results_table(rows, list(data.eval_sets)), also="predictions.jsonl")

    # ---- 2. Each method: quantize, save, measure, score ----------------------------------------------------
    rows, answers = [], {}
    for method in args.methods:
        start = time.perf_counter()
        try:
            model, tokenizer = load_model(path, method, compute, device=choice.device)
        except (ImportError, RuntimeError, ValueError, AssertionError) as e:  # a method this hardware cannot run
            print(f"{method}: not run here: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            rows.append({"method": method, "what": METHODS[method], "error": f"{type(e).__name__}: {e}"[:300]})
            save(rows, answers)
            continue
        row = {"method": method, "what": METHODS[method], "quantize_seconds": round(time.perf_counter() - start, 1)}
        if args.save_models:
            row["disk_mb"] = round(save_model(model, tokenizer, out / method), 3)
        row["decode_tokens_per_second"] = round(decode_speed(model, tokenizer, speed_prompt, args.decode_tokens), 1)
        # Memory once the model has run: on a CPU bitsandbytes repacks NF4 at the first forward (block scales to
        # bf16, their 8-bit scales dropped) and LLM.int8() moves its row scales; what serving holds is this state.
        row["memory_mb"] = round(weight_megabytes(model), 3)
        start = time.perf_counter()
        scores, answers[method] = evaluate_all(model, tokenizer, data.eval_sets, data.questions,
                                               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                               bf16=choice.bf16 and method != "fp32",
                                               fp16=choice.fp16 and method != "fp32")
        row.update(score_seconds=round(time.perf_counter() - start, 1), scores=scores)
        rows.append(row)
        print(f"{method:<26} {row.get('disk_mb', 0):7.1f} MB on disk, {row['memory_mb']:7.1f} MB in memory, "
              f"{row['decode_tokens_per_second']:5.1f} tokens/s; exact match "
              + ", ".join(f"{scores[n]['exact_match']:.1%} {n}" for n in data.eval_sets)
              + f" ({row['score_seconds']:.0f} s to score)", flush=True)
        del model
        gc.collect()
        save(rows, answers)  # after every method: an interrupted run keeps what it measured

    # ---- 3. Report ------------------------------------------------------------------------------------------
    print("\n" + results_table(rows, list(data.eval_sets)))
    if args.save_models:
        print(f"the quantized models are in {out}/<method>/")


def results_table(rows: list[dict], sets: list[str]) -> str:
    """A markdown table: one row per method, its costs and its exact-match scores (and change against bf16)."""
    from ftlab.report import markdown_table

    reference = next((r["scores"] for r in rows if r["method"] == "bf16" and "scores" in r), None)
    header = ["method", "on disk (MB)", "weights in memory (MB)", "decode tokens/s (batch 1)", "scoring (s)",
              *(f"{s} exact" for s in sets), "valid JSON"]
    cells = []
    for r in rows:
        if "error" in r:
            cells.append([r["method"], f"not run here: {r['error'][:120]}"])
            continue
        scores = []
        for s in sets:
            exact = r["scores"][s]["exact_match"]
            change = f" ({100 * (exact - reference[s]['exact_match']):+.1f})" if reference and r["method"] != "bf16" else ""
            scores.append(f"{exact:.1%}{change}")
        valid = min(r["scores"][s]["valid_json"] for s in sets)
        disk = f"{r['disk_mb']:.1f}" if "disk_mb" in r else "-"
        cells.append([r["method"], disk, f"{r['memory_mb']:.1f}", r["decode_tokens_per_second"], r["score_seconds"],
                      *scores, f"{valid:.0%}"])
    return markdown_table(header, cells)


if __name__ == "__main__":
    main()
