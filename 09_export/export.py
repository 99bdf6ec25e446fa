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
from pathlib import Path

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import EvalArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ExportArguments(EvalArguments):
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
    batch_size: int = field(default=64, metadata={"help": "generation batch for the transformers models"})
    decode_tokens: int = field(default=64, metadata={"help": "tokens decoded for the one-prompt speed measurement"})


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
    import time
    from dataclasses import asdict
    from types import SimpleNamespace

    args = parse_config(ExportArguments)[0]
    args.gguf_types = gguf_types_wanted(args)

    import torch

    from ftlab.data import load_task
    from ftlab.models import load_output, what_is_in
    from ftlab.resources import folder_megabytes
    from ftlab.task import SYSTEM_PROMPT

    # ---- 0. Where it runs (ftlab/platforms.py): the transformers models here, the GGUF files in llama.cpp ----
    choice = where_it_runs(args)

    # ---- 1. The trained model, as its script saved it ------------------------------------------------------
    if "02_sft" in args.model_name_or_path and not Path(args.model_name_or_path).exists():
        fail(f"{Path(args.model_name_or_path)} does not exist; train it first: make demo")
    kind = what_is_in(args.model_name_or_path)
    if kind == "gguf":
        fail(f"{args.model_name_or_path} is already a GGUF file; export starts from a model or adapter folder")
    data = load_task(SimpleNamespace(**asdict(args), train_file=None, probe_file="none"))
    # A full model as it was saved (fp32); an adapter on its base in the dtype it was trained on
    model, tokenizer = load_output(args.model_name_or_path, device=choice.device,
                                   dtype=getattr(torch, args.base_dtype) if kind == "adapter" else torch.float32)
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)
    print(f"{args.model_name_or_path}: {'an adapter' if kind == 'adapter' else 'a model'}; scored on "
          + ", ".join(f"{len(rows)} {name}" for name, rows in data.eval_sets.items()))
    copies = Copies(args, kind, data, tokenizer, choice, out)  # every copy measured and scored as the trained model
    source_mb = folder_megabytes(Path(args.model_name_or_path), "*.safetensors")
    saved = f"the adapter on its {args.base_dtype} base" if kind == "adapter" else "the model, saved in fp32"
    arithmetic = f", {'bf16' if choice.bf16 else 'fp16'} arithmetic (as the lessons score)" if copies.low else ""
    copies.add_transformers("trained", saved + arithmetic, None, source_mb, model)
    if copies.low and args.score and args.fp32_check:  # the same weights, only the arithmetic changed
        # A full model is already fp32 (evaluate_all scores a copy); an adapter's copy is merged and widened to fp32.
        reference = copy.deepcopy(model).merge_and_unload().float() if kind == "adapter" else model
        copies.add_transformers("trained, fp32", "the same weights in fp32 arithmetic: what arithmetic alone changes",
                                None, source_mb, reference, in_16_bits=False)
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
    copies.add_transformers(f"merged/ ({args.merge_dtype})", "one plain model, tokenizer, chat template", seconds,
                            folder_megabytes(merged, "*.safetensors"), model)
    del model
    gc.collect()

    # ---- 3. GGUF: convert once at 16 (or 8) bits, quantize the rest from f16, score each in llama.cpp ---------
    files = {}
    for gguf_type in args.gguf_types:
        start = time.perf_counter()
        files[gguf_type] = make_gguf(merged, out, gguf_type, files)
        copies.add_gguf(f"GGUF {gguf_type}", files[gguf_type], seconds=time.perf_counter() - start)

    # ---- 4. The Ollama Modelfile, and the table -------------------------------------------------------------
    if args.gguf_types:
        (out / "Modelfile").write_text(modelfile(f"model-{args.ollama_gguf}.gguf", SYSTEM_PROMPT), encoding="utf-8")
    print("\n" + copies.table())
    print(f"wrote {merged}/, " + "".join(f"{p.name}, " for p in files.values())
          + ("Modelfile, " if args.gguf_types else "") + f"results.md, results.json, predictions.jsonl in {out}")


def gguf_types_wanted(args) -> list[str]:
    """--gguf_types without 'none', once each is known to be a type llama.cpp makes, llama.cpp is installed, and
    --ollama_gguf is among them."""
    from ftlab import gguf

    types = [t for t in args.gguf_types if t.lower() != "none"]
    wanted = set(gguf.CONVERTER_TYPES) | set(gguf.QUANTIZER_TYPES)
    if unknown := [t for t in types if t not in wanted]:
        fail(f"--gguf_types: unknown {unknown}; choose from {', '.join(sorted(wanted))}")
    if types and (why := gguf.missing()):
        fail(f"GGUF export needs llama.cpp: {why}")
    if types and args.ollama_gguf not in types:
        fail(f"--ollama_gguf {args.ollama_gguf} is not among --gguf_types {types}")
    return types


def where_it_runs(args):
    """The device the transformers models run on (ftlab/platforms.py), printed with where llama.cpp runs the GGUF
    files. On a GPU without bf16 (a T4) an adapter's bf16 base becomes fp16, as its training run made it."""
    from ftlab import gguf
    from ftlab.platforms import choose_to_run

    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    notes = ""
    if choice.device == "cuda" and not choice.bf16 and args.base_dtype == "bfloat16":
        args.base_dtype, notes = "float16", "; an adapter's base bfloat16 -> float16, as its training run made it"
    where = "on the GPU" if gguf.on_gpu() else "on the CPU (a CPU build of llama-cpp-python)"
    print(f"device: {choice.device}, {choice.dtype} ({choice.why}{notes}): the transformers "
          "models" + (f"; llama.cpp runs the GGUF files {where}" if args.gguf_types else ""), flush=True)
    return choice


def make_gguf(merged: Path, out: Path, gguf_type: str, files: dict[str, Path]) -> Path:
    """out/model-<gguf_type>.gguf from the merged/ folder: written by llama.cpp's converter (f32, f16, bf16, q8_0) or
    quantized by its quantizer from the f16 file, which is converted first (and added to `files`) if it is not
    there yet: llama.cpp quantizes from a 16-bit file."""
    from ftlab import gguf

    target = out / f"model-{gguf_type}.gguf"
    if gguf_type in gguf.CONVERTER_TYPES:
        return gguf.convert(merged, target, gguf_type)
    if "f16" not in files:
        files["f16"] = gguf.convert(merged, out / "model-f16.gguf", "f16")
    return gguf.quantize(files["f16"], target, gguf_type)


class Copies:
    """The trained model and each copy made of it, measured alike: size on disk, time to make, decode speed at batch
    1, and scores and answers on the same eval sets with the same metric, set beside the trained model's. After each
    one, results.json, results.md and predictions.jsonl are rewritten: an interrupted run keeps what it measured."""

    def __init__(self, args, kind: str, data, tokenizer, choice, out: Path):
        self.args, self.kind, self.data, self.tokenizer, self.choice, self.out = args, kind, data, tokenizer, choice, out
        self.low = choice.dtype != "float32"  # scored in the device's 16-bit format where it has one, as lessons do
        self.speed_prompt = data.eval_sets["synthetic"][0]["messages"][:-1]
        self.rows, self.answers = [], {}

    def add_transformers(self, name: str, what: str, seconds: float | None, size_mb: float, model,
                         in_16_bits: bool = True) -> None:
        """A PyTorch model, scored as every lesson scores (in the device's 16-bit autocast unless not `in_16_bits`)."""
        from ftlab.evaluation import evaluate_all
        from ftlab.quantization import decode_speed

        speed = decode_speed(model, self.tokenizer, self.speed_prompt, self.args.decode_tokens)
        low = self.low and in_16_bits
        scored = evaluate_all(model, self.tokenizer, self.data.eval_sets, max_new_tokens=self.args.max_new_tokens,
                              batch_size=self.args.batch_size, bf16=self.choice.bf16 and low,
                              fp16=self.choice.fp16 and low) if self.args.score else None
        self.add(name, what, seconds, size_mb, speed, scored)

    def add_gguf(self, name: str, path: Path, seconds: float) -> None:
        """A GGUF file as a client runs it: in llama.cpp, prompts formatted by the chat template inside the file."""
        import gc

        from ftlab import gguf
        from ftlab.evaluation import evaluate

        llm = gguf.load(path)
        scored = None
        if self.args.score:  # the same prompts and metric, each answer generated by llama.cpp
            scores, answers = {}, {}
            for set_name, examples in self.data.eval_sets.items():
                scores[set_name], answers[set_name] = evaluate(llm, None, examples, generator=gguf.generate,
                                                               max_new_tokens=self.args.max_new_tokens)
            scored = scores, answers
        types = gguf.tensor_types(path)
        self.add(name, "tensors: " + ", ".join(f"{n} {t}" for t, n in types.items()), seconds,
                 path.stat().st_size / 1e6, gguf.decode_speed(llm, self.tokenizer, self.speed_prompt,
                                                              self.args.decode_tokens), scored)
        del llm
        gc.collect()

    def add(self, name: str, what: str, seconds: float | None, size_mb: float, speed: float,
            scored: tuple[dict, dict] | None) -> None:
        """One row (`scored`: (scores, answers) or None); printed, and the results rewritten with it."""
        from ftlab.report import write_predictions, write_results

        scores = None
        if scored:
            scores, self.answers[name] = scored
        row = {"name": name, "what": what, "seconds": None if seconds is None else round(seconds, 1),
               "disk_mb": round(size_mb, 1), "decode_tokens_per_second": round(speed, 1), "scores": scores}
        if scores:  # a faithful copy gives the trained model's answers word for word (16-bit, and fp32 arithmetic)
            row.update(same_answers(self.answers, name))
        self.rows.append(row)
        sets = self.data.eval_sets
        shown = ", ".join(f"{scores[s]['exact_match']:.1%} {s}" for s in sets) if scores else "not scored"
        print(f"{name:<22} {size_mb:7.1f} MB  {speed:6.1f} tokens/s  exact match {shown}", flush=True)
        write_predictions(self.out / "predictions.jsonl", sets, None, self.answers)
        results = {"model": self.args.model_name_or_path, "kind": self.kind, "rows": self.rows,
                   "eval_samples": self.args.eval_samples}
        write_results(self.out, results, self.table(), also="predictions.jsonl")

    def table(self) -> str:
        return results_table(self.rows, list(self.data.eval_sets))


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
    from ftlab.report import markdown_table

    reference = rows[0]["scores"] if rows and rows[0]["scores"] else None
    header = ["copy", "what", "on disk (MB)", "made in (s)", "decode tokens/s (batch 1)", *(f"{s} exact" for s in sets),
              "valid JSON", "same answers as trained (bf16)", "as trained, fp32"]
    cells = []
    for i, r in enumerate(rows):
        scores, valid = ["not scored"] * len(sets), "-"
        if r["scores"]:
            scores = [f"{r['scores'][s]['exact_match']:.1%}"
                      + (f" ({100 * (r['scores'][s]['exact_match'] - reference[s]['exact_match']):+.1f})"
                         if reference and i else "") for s in sets]
            valid = f"{min(r['scores'][s]['valid_json'] for s in sets):.0%}"
        same = [f"{sum(r[key].values())} of {sum(r['scores'][s]['n'] for s in sets)}" if r.get(key) else "-"
                for key in ("same_answers", "same_answers_fp32")]
        cells.append([r["name"], r["what"], f"{r['disk_mb']:.1f}", "-" if r["seconds"] is None else r["seconds"],
                      r["decode_tokens_per_second"], *scores, valid, *same])
    return markdown_table(header, cells)


if __name__ == "__main__":
    main()
