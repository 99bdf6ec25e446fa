"""Take the trained model elsewhere: one 16-bit folder, a GGUF file for llama.cpp / Ollama, each scored again.

A run leaves what suits training: 02_sft a model in 32-bit floats, 05_peft_lora a LoRA adapter that only
works on top of its base. To serve it, this script
1. merges an adapter into its base (W + B·A·alpha/r, then a plain model again) and saves that, or a full
   model as it is, in 16 bits with its tokenizer and chat template: `merged/`, loadable by any
   transformers-based server (vLLM and TGI read such a folder);
2. converts `merged/` with llama.cpp's own converter into one GGUF file (weights, tokenizer and chat template
   in a single file) in f16, and quantizes that with llama.cpp's quantizer (q8_0, q4_k_m by default);
3. writes an Ollama `Modelfile` for one of them (`ollama create extract -f Modelfile`);
4. scores each one again on the same eval sets with the same metric: the transformers ones as every lesson
   does, the GGUF files in llama.cpp itself, through llama-cpp-python, formatted by the chat template inside
   the file, as a client would run it. A copy that scores differently from the trained model is a broken copy.

Run from the repository root inside the project's environment, after `make setup-gguf` (builds
llama-cpp-python and unpacks its converter, once) and a training run:

    make demo                                           # trains runs/02_sft
    python 09_export/export.py --config 09_export/export.yaml
    python 09_export/export.py --config 09_export/export.yaml --model_name_or_path runs/05_peft_lora \
        --output_dir runs/09_export_lora                # an adapter: merged into its base first
    python -m ftlab.chat runs/09_export/model-q4_k_m.gguf    # talk to the exported file

Writes merged/, model-<type>.gguf, Modelfile, results.md, results.json and predictions.jsonl to --output_dir.

Where it runs (the first line says): the transformers models are merged and scored on the GPU when there is one,
under its bf16 (on a T4, fp16) autocast as the training lessons score, and an adapter's bf16 base becomes fp16
on a card without bf16, as its training run made it; on a CPU, as the lessons score there. The GGUF files run in
llama.cpp: on the GPU only if llama-cpp-python was built for CUDA (`CMAKE_ARGS="-DGGML_CUDA=on" make
setup-gguf`); the default build runs them on the CPU, which is where most llama.cpp and Ollama users run them.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks the package {e.name!r}: run `make setup`, then "
                     "`source .venv/bin/activate` (Windows: .venv\\Scripts\\activate; see README, Platforms)") from None


@dataclass
class ExportArguments:
    model_name_or_path: str = field(default="runs/02_sft", metadata={
        "help": "what a script saved: a full model (make demo: runs/02_sft) or an adapter (runs/05_peft_lora)"})
    output_dir: str = field(default="runs/09_export", metadata={"help": "merged/, the GGUF files, the results"})
    base_dtype: str = field(default="bfloat16", metadata={
        "help": "an adapter's base, loaded as it was trained (the course's LoRA and QLoRA runs train on a bf16 base), "
                "so the merge adds the adapter to the weights it learned against", "choices": ("bfloat16", "float32")})
    merge_dtype: str = field(default="bfloat16", metadata={
        "help": "the 16-bit format of merged/: bfloat16 (fp32's range) or float16 (3 more bits of precision, "
                "values above 65504 overflow)", "choices": ("bfloat16", "float16", "float32")})
    gguf_types: list[str] = field(default_factory=lambda: ["f16", "q8_0", "q4_k_m"], metadata={
        "help": "GGUF files to write: f16, bf16, f32 or q8_0 by the converter; q6_k, q5_k_m, q4_k_m, q4_0 "
                "quantized from the f16 one ('none': merged/ only)"})
    ollama_gguf: str = field(default="q8_0", metadata={"help": "which GGUF file the Ollama Modelfile names"})
    score: bool = field(default=True, metadata={"help": "score the trained model and every export"})
    fp32_check: bool = field(default=True, metadata={
        "help": "where the trained model is scored in bf16, also score it in fp32 (~2 min): how many answers a change "
                "of arithmetic alone flips, the yardstick for how far a faithful copy may differ"})
    eval_file: str | None = field(default=None, metadata={"help": "synthetic eval split; default data/sft_eval.jsonl"})
    eval_samples: int = field(default=40, metadata={"help": "synthetic eval examples scored (0 = all)"})
    handwritten_file: str | None = field(default=None, metadata={
        "help": "hand-written eval set; default data/handwritten_eval.jsonl, 'none' to skip"})
    max_new_tokens: int = field(default=80, metadata={"help": "generation budget per answer (ours need <= 70)"})
    batch_size: int = field(default=64, metadata={"help": "generation batch for the transformers models"})
    decode_tokens: int = field(default=64, metadata={"help": "tokens decoded for the one-prompt speed measurement"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})


def modelfile(gguf_name: str, system_prompt: str) -> str:
    """An Ollama Modelfile: the GGUF file, SmolLM2's ChatML turns as Ollama's template, the task's system prompt
    (replace it to serve another task) and greedy decoding, as every score here is measured."""
    return (f"# ollama create extract -f Modelfile && ollama run extract \"Ana Lima, 31, lives in Porto.\"\n"
            f"FROM ./{gguf_name}\n"
            'TEMPLATE """{{- range $i, $_ := .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
            '{{ end }}<|im_start|>assistant\n"""\n'
            f'SYSTEM """{system_prompt}"""\n'
            'PARAMETER stop "<|im_end|>"\nPARAMETER temperature 0\n')


def main():
    import copy
    import gc
    import json
    import time
    from dataclasses import asdict
    from pathlib import Path
    from types import SimpleNamespace

    args = parse_config(ExportArguments)[0]
    from ftlab import gguf

    args.gguf_types = [t for t in args.gguf_types if t.lower() != "none"]
    wanted = set(gguf.CONVERTER_TYPES) | set(gguf.QUANTIZER_TYPES)
    if unknown := [t for t in args.gguf_types if t not in wanted]:
        fail(f"--gguf_types: unknown {unknown}; choose from {', '.join(sorted(wanted))}")
    if args.gguf_types and (why := gguf.missing()):
        fail(f"GGUF export needs llama.cpp: {why}")
    if args.gguf_types and args.ollama_gguf not in args.gguf_types:
        fail(f"--ollama_gguf {args.ollama_gguf} is not among --gguf_types {args.gguf_types}")

    import torch

    from ftlab.data import DataError, load_task
    from ftlab.evaluation import evaluate, evaluate_all
    from ftlab.models import ModelNotFound, load_output, what_is_in
    from ftlab.platforms import choose_to_run
    from ftlab.quantization import decode_speed
    from ftlab.report import folder_megabytes, write_predictions
    from ftlab.task import SYSTEM_PROMPT

    # ---- 0. Where it runs (ftlab/platforms.py): the transformers models here, the GGUF files in llama.cpp ----
    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    notes = ""
    if choice.device == "cuda" and not choice.bf16 and args.base_dtype == "bfloat16":
        args.base_dtype, notes = "float16", "; an adapter's base bfloat16 -> float16, as its training run made it"
    where = "on the GPU" if gguf.on_gpu() else "on the CPU (a CPU build of llama-cpp-python)"
    print(f"device: {choice.device}, {choice.dtype} ({choice.why}{notes}): the transformers "
          "models" + (f"; llama.cpp runs the GGUF files {where}" if args.gguf_types else ""), flush=True)

    # ---- 1. The trained model, as its script saved it ------------------------------------------------------
    try:
        kind = what_is_in(args.model_name_or_path)
        if kind == "gguf":
            fail(f"{args.model_name_or_path} is already a GGUF file; export starts from a model or adapter folder")
        data = load_task(SimpleNamespace(**asdict(args), train_file=None, probe_file="none"))
        # A full model as it was saved (fp32); an adapter on its base in the dtype it was trained on
        model, tokenizer = load_output(args.model_name_or_path, device=choice.device,
                                       dtype=getattr(torch, args.base_dtype) if kind == "adapter" else torch.float32)
    except ModelNotFound as e:
        fail(f"{e}" + ("; train it first: make demo" if "02_sft" in args.model_name_or_path else ""))
    except DataError as e:
        fail(e)
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)
    out.mkdir(parents=True, exist_ok=True)
    low = choice.dtype != "float32"  # scored in the device's 16-bit format where it has one, as every lesson scores
    print(f"{args.model_name_or_path}: {'an adapter' if kind == 'adapter' else 'a model'}; scored on "
          + ", ".join(f"{len(rows)} {name}" for name, rows in data.eval_sets.items()))
    rows, answers = [], {}
    speed_prompt = data.eval_sets["synthetic"][0]["messages"][:-1]

    def record(name: str, what: str, seconds: float, size_mb: float, speed: float, scores: dict | None):
        row = {"name": name, "what": what, "seconds": None if seconds is None else round(seconds, 1),
               "disk_mb": round(size_mb, 1),
               "decode_tokens_per_second": round(speed, 1), "scores": scores}
        if scores:  # a faithful copy gives the trained model's answers word for word (16-bit, and fp32 arithmetic)
            row.update(same_answers(answers, name))
        rows.append(row)
        shown = ", ".join(f"{scores[s]['exact_match']:.1%} {s}" for s in data.eval_sets) if scores else "not scored"
        print(f"{name:<22} {size_mb:7.1f} MB  {speed:6.1f} tokens/s  exact match {shown}", flush=True)
        results = {"model": args.model_name_or_path, "kind": kind, "rows": rows, "eval_samples": args.eval_samples}
        (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "results.md").write_text(results_table(rows, list(data.eval_sets)) + "\n", encoding="utf-8")
        write_predictions(out / "predictions.jsonl", data.eval_sets, None, answers)

    def score_transformers(name, m, in_16_bits=low):
        if not args.score:
            return None
        scores, answers[name] = evaluate_all(m, tokenizer, data.eval_sets, max_new_tokens=args.max_new_tokens,
                                             batch_size=args.batch_size, bf16=choice.bf16 and in_16_bits,
                                             fp16=choice.fp16 and in_16_bits)
        return scores

    source_mb = folder_megabytes(Path(args.model_name_or_path), "*.safetensors")
    saved = f"the adapter on its {args.base_dtype} base" if kind == "adapter" else "the model, saved in fp32"
    arithmetic = f", {'bf16' if choice.bf16 else 'fp16'} arithmetic (as the lessons score)" if low else ""
    record("trained", saved + arithmetic, None, source_mb,
           decode_speed(model, tokenizer, speed_prompt, args.decode_tokens), score_transformers("trained", model))
    if low and args.score and args.fp32_check:  # the same weights, only the arithmetic changed
        # A full model is already fp32 (evaluate_all scores a copy); an adapter's copy is merged and widened to fp32.
        reference = copy.deepcopy(model).merge_and_unload().float() if kind == "adapter" else model
        record("trained, fp32", "the same weights in fp32 arithmetic: what arithmetic alone changes", None,
               source_mb, decode_speed(reference, tokenizer, speed_prompt, args.decode_tokens),
               score_transformers("trained, fp32", reference, in_16_bits=False))
        del reference

    # ---- 2. Merge (an adapter) and save in 16 bits, with the tokenizer and its chat template -----------------
    start = time.perf_counter()
    if kind == "adapter":
        model = model.merge_and_unload()  # each LoRA layer's B·A·alpha/r added into its weight; the layers removed
    merged = out / "merged"
    model.to(getattr(torch, args.merge_dtype)).save_pretrained(merged)
    tokenizer.save_pretrained(merged)  # writes chat_template.jinja too: the converter and servers read it
    seconds = time.perf_counter() - start
    del model
    gc.collect()
    model, _ = load_output(merged, device=choice.device)  # scored as loaded back from disk: what a server would get
    record(f"merged/ ({args.merge_dtype})", "one plain model, tokenizer, chat template", seconds,
           folder_megabytes(merged, "*.safetensors"), decode_speed(model, tokenizer, speed_prompt, args.decode_tokens),
           score_transformers(f"merged/ ({args.merge_dtype})", model))
    del model
    gc.collect()

    # ---- 3. GGUF: convert once at 16 (or 8) bits, quantize the rest from f16, score each in llama.cpp ---------
    files = {}
    for gguf_type in args.gguf_types:
        target = out / f"model-{gguf_type}.gguf"
        start = time.perf_counter()
        if gguf_type in gguf.CONVERTER_TYPES:
            gguf.convert(merged, target, gguf_type)
        else:  # llama.cpp quantizes from a 16-bit file: write the f16 one first if it was not asked for
            f16 = files.get("f16") or gguf.convert(merged, out / "model-f16.gguf", "f16")
            files.setdefault("f16", f16)
            gguf.quantize(f16, target, gguf_type)
        files[gguf_type] = target
        seconds = time.perf_counter() - start
        llm = gguf.load(target)
        scores = None
        if args.score:
            scores, answers[f"GGUF {gguf_type}"] = {}, {}
            for set_name, examples in data.eval_sets.items():
                scores[set_name], answers[f"GGUF {gguf_type}"][set_name] = evaluate(
                    llm, None, examples, generator=gguf.generate, max_new_tokens=args.max_new_tokens)
        types = gguf.tensor_types(target)
        record(f"GGUF {gguf_type}", "tensors: " + ", ".join(f"{n} {t}" for t, n in types.items()), seconds,
               target.stat().st_size / 1e6,
               gguf.decode_speed(llm, tokenizer, speed_prompt, args.decode_tokens), scores)
        del llm
        gc.collect()

    # ---- 4. The Ollama Modelfile, and the table -------------------------------------------------------------
    if args.gguf_types:
        (out / "Modelfile").write_text(modelfile(f"model-{args.ollama_gguf}.gguf", SYSTEM_PROMPT), encoding="utf-8")
    print("\n" + results_table(rows, list(data.eval_sets)))
    print(f"wrote {merged}/, " + "".join(f"{p.name}, " for p in files.values())
          + ("Modelfile, " if args.gguf_types else "") + f"results.md, results.json, predictions.jsonl in {out}")


def same_answers(answers: dict[str, dict], name: str) -> dict:
    """How many of `name`'s answers, per eval set, are word for word those of the trained model scored as the
    lessons score it ("same_answers") and in fp32 arithmetic ("same_answers_fp32"), where those were scored."""
    counts = {}
    for key, reference in (("same_answers", "trained"), ("same_answers_fp32", "trained, fp32")):
        if reference in answers and reference != name:
            counts[key] = {s: sum(a == b for a, b in zip(answers[reference][s], answers[name][s], strict=True))
                           for s in answers[reference]}
    return counts


def results_table(rows: list[dict], sets: list[str]) -> str:
    """One row per copy: its size, how long making it took, its speed, and its scores against the trained model's."""
    reference = rows[0]["scores"] if rows and rows[0]["scores"] else None
    head = ("| copy | what | on disk (MB) | made in (s) | decode tokens/s (batch 1) | "
            + " | ".join(f"{s} exact" for s in sets) + " | valid JSON | same answers as trained (bf16) | as trained, fp32 |")
    lines = [head, "|" + "---|" * head.count(" |")]
    for i, r in enumerate(rows):
        cells, valid = ["not scored"] * len(sets), "-"
        if r["scores"]:
            cells = [f"{r['scores'][s]['exact_match']:.1%}"
                     + (f" ({100 * (r['scores'][s]['exact_match'] - reference[s]['exact_match']):+.1f})"
                        if reference and i else "") for s in sets]
            valid = f"{min(r['scores'][s]['valid_json'] for s in sets):.0%}"
        same = [f"{sum(r[key].values())} of {sum(r['scores'][s]['n'] for s in sets)}" if r.get(key) else "-"
                for key in ("same_answers", "same_answers_fp32")]
        made = "-" if r["seconds"] is None else r["seconds"]
        lines.append(f"| {r['name']} | {r['what']} | {r['disk_mb']:.1f} | {made} | {r['decode_tokens_per_second']} | "
                     + " | ".join(cells) + f" | {valid} | " + " | ".join(same) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
