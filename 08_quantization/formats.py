"""Number formats on real tensors: what fp32, tf32, bf16, fp16, fp8, int8, int4 and NF4 do to a model's numbers.

Before quantizing a model it pays to look at the numbers it holds. Every weight, every activation (the
input of each matrix multiply, the residual stream between blocks) and every gradient of one training step
is rounded here to each format, and three things are counted: values too large for the format (overflow:
infinity), non-zero values too small for it (underflow: zero), and the rounding error of the rest, relative to
the values' size. The formats' arithmetic is in ftlab/numerics.py (checked against torch's own casts). The
script then runs the whole model in fp16 and in bf16 and compares its predictions with fp32's.

Run from the repository root inside the project's environment (`make setup`; `source .venv/bin/activate`):

    python 08_quantization/formats.py --config 08_quantization/formats.yaml
    python 08_quantization/formats.py --config 08_quantization/formats.yaml --model_name_or_path runs/02_sft \
        --output_dir runs/08_formats_sft                         # the finetuned model (make demo trains it)
    python 08_quantization/formats.py --config 08_quantization/formats.yaml --formats fp16 bf16 --examples 2

Writes results.json, results.md and formats.png (each format's range against the values' magnitudes, and
its rounding error) to --output_dir.

Where it runs (the first line says): the model runs on the GPU when there is one (activations and gradients are
then the GPU's fp32, and the whole-model runs use its native fp16 and bf16); the rounding is counted on the CPU
(ftlab/numerics.py simulates every format, so the counts do not depend on the device).
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

ALL_FORMATS = ["fp32", "tf32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3_scaled", "int8", "int4_g32", "nf4_b64"]
WEIGHTS_ONLY = {"nf4_b64"}  # NF4's levels are placed for normally distributed weights: not used on anything else
KINDS = {"weights": "weights", "linear_inputs": "activations: matmul inputs", "residual": "activations: residual stream",
         "residual_squared": "residual squared (what RMSNorm averages)", "gradients": "gradients (one training step)"}


@dataclass
class FormatArguments:
    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={
        "help": "a hub id (the embedded SmolLM2 offline) or a model folder such as runs/02_sft"})
    formats: list[str] = field(default_factory=lambda: list(ALL_FORMATS), metadata={
        "help": "formats to measure (ftlab/numerics.py): " + " ".join(ALL_FORMATS)})
    examples: int = field(default=4, metadata={"help": "eval conversations (prompt + answer) run through the model"})
    gradients: bool = field(default=True, metadata={"help": "also measure the gradients of one training step"})
    whole_model: bool = field(default=True, metadata={"help": "also run the model in fp16 and in bf16 against fp32"})
    whole_model_examples: int = field(default=2, metadata={"help": "conversations for the whole-model runs"})
    output_dir: str = field(default="runs/08_formats", metadata={"help": "results.json, results.md, formats.png"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})


def main():
    args = parse_config(FormatArguments)[0]
    from ftlab.numerics import FORMATS, Tally, format_properties

    if unknown := [f for f in args.formats if f not in FORMATS]:
        fail(f"--formats: unknown {unknown}; choose from {', '.join(FORMATS)}")
    if args.examples < 1:
        fail(f"--examples {args.examples}: must be at least 1")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlab.data import load_split
    from ftlab.models import resolve_model
    from ftlab.platforms import choose_to_run
    from ftlab.report import write_results

    # ---- 0. Where it runs: the model on the best device there is (ftlab/platforms.py); the counting on the CPU --
    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    device = choice.device
    print(f"device: {device} ({choice.why}): the model runs there, in fp32, fp16 and bf16; "
          "each format's rounding is counted on the CPU", flush=True)

    path = resolve_model(args.model_name_or_path)
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)

    # ---- 1. The model in fp32 and a batch of real conversations (prompt + gold answer) ----------------------
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"  # every row starts at position 0, as it would alone
    texts = [tokenizer.apply_chat_template(ex["messages"], tokenize=False) for ex in load_split("sft_eval")[:args.examples]]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    real = batch["attention_mask"].bool()  # padding positions are not the model's numbers
    print(f"model: {path}; {len(texts)} conversations, {int(real.sum())} tokens; formats: {' '.join(args.formats)}")
    tallies = {kind: Tally([f for f in args.formats if kind == "weights" or f not in WEIGHTS_ONLY]) for kind in KINDS}

    # ---- 2. Weights: every parameter, each shared tensor once (.cpu(): counted there; a no-op for a CPU tensor) --
    for p in model.parameters():
        tallies["weights"].add(p.cpu())

    # ---- 3. Activations: the input of every linear layer (q/k/v share one, as do gate/up), the residual stream
    # after each block, and its square, which RMSNorm averages (transformers computes that in fp32, and here is why)
    last_input = [None]

    def record_input(module, inputs):
        x = inputs[0]
        if x.data_ptr() != last_input[0]:
            last_input[0] = x.data_ptr()
            tallies["linear_inputs"].add(x[real].cpu())

    hooks = [m.register_forward_pre_hook(record_input) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
    for h in hooks:
        h.remove()
    for hidden in output.hidden_states:
        tallies["residual"].add(hidden[real].cpu())
        tallies["residual_squared"].add((hidden[real] ** 2).cpu())
    del output

    # ---- 4. Gradients of one training step (loss on every real token) ---------------------------------------
    if args.gradients:
        labels = batch["input_ids"].masked_fill(~real, -100)
        model(**batch, labels=labels).loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                tallies["gradients"].add(p.grad.cpu())
        model.zero_grad(set_to_none=True)
    else:
        del tallies["gradients"]

    # ---- 5. The whole model in 16 bits: does anything overflow, and how often does the next token change? ---
    # On a few conversations only: most CPUs have no fp16 arithmetic and emulate it, far slower than bf16.
    whole = whole_model_in_16_bits(model, batch, real, args.whole_model_examples) if args.whole_model else {}

    # ---- 6. Report: tables, a verdict on fp16 vs bf16, the plot ---------------------------------------------
    results = {"model": args.model_name_or_path, "device": device, "tokens": int(real.sum()),
               "properties": format_properties(args.formats),
               **{kind: tally.summary() for kind, tally in tallies.items()}, "whole_model": whole}
    report = markdown(results, args.formats)
    print("\n" + report)
    plot(results, args.formats, out / "formats.png")
    write_results(out, results, report, also="formats.png")


def whole_model_in_16_bits(model, batch, real, examples: int) -> dict:
    """Run a copy of the model in fp32, fp16 and bf16 on the first `examples` conversations; for each 16-bit
    format: inf/NaN values, the largest residual, how often the next token is fp32's, the logits' relative error."""
    import copy
    import time

    import torch

    whole = {}
    few = {key: value[:examples] for key, value in batch.items()}
    mask = real[:examples]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        converted = copy.deepcopy(model).to(dtype)  # a fresh copy each time: fp16 -> bf16 would keep fp16's rounding
        start = time.perf_counter()
        with torch.no_grad():
            run = converted(**few, output_hidden_states=True)
        seconds = time.perf_counter() - start
        del converted
        logits = run.logits[mask].float()
        if dtype == torch.float32:
            reference, fp32_seconds = logits, seconds
            continue
        whole[str(dtype).removeprefix("torch.")] = {
            "non_finite_values": int(sum((~torch.isfinite(h[mask])).sum() for h in run.hidden_states))
            + int((~torch.isfinite(logits)).sum()),
            "largest_residual": max(h[mask].float().abs().max().item() for h in run.hidden_states),
            "same_next_token": (logits.argmax(-1) == reference.argmax(-1)).float().mean().item(),
            "logit_relative_error": ((logits - reference).norm() / reference.norm()).item(),
            "seconds": round(seconds, 1), "fp32_seconds": round(fp32_seconds, 1), "tokens": int(mask.sum())}
    return whole


def markdown(results: dict, names: list[str]) -> str:
    """The properties table, one table per kind of tensor, and what the fp16/bf16 runs of the whole model showed."""
    from ftlab.report import markdown_table

    properties = []
    for p in results["properties"]:
        if "largest" in p:
            values = [f"{p['largest']:.4g}", f"{p['smallest_normal']:.3g}", f"{p['smallest_subnormal']:.3g}"]
        else:  # an integer format: its range is wherever the scale puts its levels
            values = [f"the scale's ({p['levels']} levels)", "-", "-"]
        properties.append([p["format"], p["bits"], *values, f"{p['relative_step']:.3g}", p["scale"] or "-"])
    lines = [markdown_table(["format", "bits", "largest", "smallest normal", "smallest subnormal", "relative step",
                             "scale"], properties)]
    for kind, title in KINDS.items():
        if kind not in results:
            continue
        t = results[kind]
        lines += ["", (f"**{title}**: {t['values']:,} values, largest |x| {t['largest']:.4g}, smallest non-zero "
                       f"|x| {t['smallest_nonzero']:.3g}"), "",
                  markdown_table(["format", "overflow", "underflow (non-zero -> 0)", "relative error"],
                                 [[r["format"], f"{r['overflow']:,}", f"{r['underflow']:,}", f"{r['relative_error']:.2e}"]
                                  for r in t["formats"]])]
    for dtype, w in results["whole_model"].items():
        lines.append(f"\nwhole model in {dtype} ({w['tokens']} tokens in {w['seconds']} s; fp32 {w['fp32_seconds']} s): {w['non_finite_values']:,} inf/NaN "
                     f"values, largest residual {w['largest_residual']:.4g}, same next token as fp32 at "
                     f"{w['same_next_token']:.2%} of positions, logits off by {w['logit_relative_error']:.2e} (relative)")
    if "fp16" in names:
        largest = max(results[k]["largest"] for k in ("linear_inputs", "residual"))
        lines.append(f"\nfp16 (largest 65,504) on activations: the largest activation is {largest:.4g}, "
                     + ("so fp16 overflows." if largest > 65504 else "so no activation overflows fp16 on this model")
                     + f"; its square inside RMSNorm reaches {results['residual_squared']['largest']:.4g}, which "
                     + ("overflows fp16 (bf16 holds it)" if results["residual_squared"]["largest"] > 65504 else "fp16 holds"))
    return "\n".join(lines)


def plot(results: dict, names: list[str], path) -> None:
    """Left: how the magnitudes of each kind of tensor spread over powers of two, with fp16's and fp8 e4m3's ranges
    marked. Right: each format's relative rounding error on each kind of tensor."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftlab.numerics import FORMATS

    kinds = [k for k in KINDS if k in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5))
    for kind in kinds:
        hist = {int(e): n for e, n in results[kind]["log2_histogram"].items()}
        es = sorted(hist)
        total = sum(hist.values())
        left.plot(es, [hist[e] / total for e in es], marker=".", label=KINDS[kind])
    for name, color in (("fp16", "red"), ("fp8_e4m3", "purple")):
        fmt = FORMATS[name]
        for value, style in ((fmt.largest, "-"), (fmt.smallest_subnormal, ":")):
            left.axvline(math.log2(value), color=color, linestyle=style, linewidth=1)
        left.text(math.log2(fmt.largest), 0, f" {name} max", color=color, rotation=90, va="bottom", fontsize=8)
    left.set_xlabel("log2 |x|  (solid: a format's largest value; dotted: its smallest subnormal)")
    left.set_ylabel("share of values")
    left.legend(fontsize=7)
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        errors = {r["format"]: r["relative_error"] for r in results[kind]["formats"]}
        right.bar([j + i * width for j in range(len(names))], [max(errors.get(n, math.nan), 1e-9) for n in names], width,
                  label=KINDS[kind])
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=45, ha="right")
    right.set_yscale("log")
    right.set_ylabel("relative rounding error")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
