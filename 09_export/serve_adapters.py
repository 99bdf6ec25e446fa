"""Serve several finetunes from one base: N LoRA adapters on one model, the right one switched in per request.

A LoRA adapter is a few MB against its base's hundreds: a service with ten customers' finetunes can hold
one base and ten adapters instead of ten models. This script loads the base once, puts each adapter on it
under its own name (PEFT `load_adapter`), then answers a stream of requests in arrival order, each asking
for one adapter: `set_adapter(name)` and generate. It measures what the adapters cost in memory against
the same finetunes as N merged models, what switching costs per request, and scores each adapter's
answers with its task's metric, to show that switching serves each one as if it were alone. (Multi-LoRA
servers such as vLLM and LoRAX go further and mix adapters within one batch; PEFT's
`generate(..., adapter_names=[...])` does the same.)

Run from the repository root inside the project's environment, after training two adapters on the same base:

    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml                          # extract
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --task describe --output_dir runs/07_b_lora
    python 09_export/serve_adapters.py --config 09_export/serve_adapters.yaml

Writes results.json and results.md to --output_dir.

Where it runs (the first line says): on the GPU when there is one, in its 16-bit format (bf16; fp16 on a T4),
and the memory each way of serving adds is then the GPU memory its weights take; else on the CPU (bf16 where it
multiplies it natively), measured as the resident memory the process grows by.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ServeArguments:
    adapters: list[str] = field(default_factory=lambda: ["extract=runs/05_peft_lora", "describe=runs/07_b_lora"],
                                metadata={"help": "TASK=FOLDER for each adapter, all trained on the same base; TASK "
                                                  "(extract or describe) picks the requests it gets and its metric"})
    requests: int = field(default=20, metadata={"help": "requests per adapter (eval examples of its task)"})
    compare_merged: bool = field(default=True, metadata={
        "help": "also hold the same finetunes as N merged models: their memory and answers, for comparison"})
    max_new_tokens: int = field(default=80, metadata={"help": "generation budget per answer (ours need <= 70)"})
    dtype: str = field(default="auto", metadata={
        "help": "auto: the device's 16-bit format (bf16; fp16 on a GPU without bf16; float32 on a CPU without bf16)",
        "choices": ("auto", "bfloat16", "float16", "float32")})
    output_dir: str = field(default="runs/09_serve_adapters", metadata={"help": "results.json and results.md"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})


def parse_adapters(specs: list[str]) -> list[tuple[str, str, str]]:
    """["extract=runs/a", ...] -> [(name, task, folder)]; names are the tasks, numbered when one repeats."""
    parsed, seen = [], {}
    for spec in specs:
        task, sep, folder = spec.partition("=")
        if not sep or task not in ("extract", "describe") or not folder:
            fail(f"--adapters: {spec!r} is not TASK=FOLDER with TASK extract or describe")
        seen[task] = seen.get(task, 0) + 1
        parsed.append((task if seen[task] == 1 else f"{task}_{seen[task]}", task, folder))
    return parsed


def load_shared(base_path: str, adapters: list[tuple[str, str, str]], dtype: str, device: str = "cpu"):
    """One base with every adapter on it, each under its name (the first active), on `device`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype)).to(device)
    name, _, folder = adapters[0]
    model = PeftModel.from_pretrained(base, folder, adapter_name=name)
    for name, _, folder in adapters[1:]:
        model.load_adapter(folder, adapter_name=name)  # another set of A, B matrices beside the first
    return model.eval()


def load_merged(base_path: str, adapters: list[tuple[str, str, str]], dtype: str, device: str = "cpu") -> dict:
    """Each finetune as a model of its own: a fresh base with its adapter merged in, by name, on `device`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return {name: PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype)).to(device), folder
    ).merge_and_unload().eval() for name, _, folder in adapters}


def resident_growth(loader: str, *args) -> float:
    """MB the process's resident memory grows by while `loader` (a function above) loads, measured in a fresh
    process: in this one, memory freed earlier would be reused and hide part of the growth. For a model loaded on
    a GPU (the loader's last argument "cuda"), the GPU memory its tensors take instead (the RAM they pass through
    is freed again)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_grow, loader, *args).result()


def _grow(loader: str, *args) -> float:
    import gc

    import peft  # noqa: F401  (the libraries' own memory is not what is measured)
    import transformers.models.llama.modeling_llama  # noqa: F401

    from ftlab.resources import memory_in_use

    gc.collect()
    if args[-1] == "cuda":
        import torch

        before = torch.cuda.memory_allocated()
        held = globals()[loader](*args)
        return (torch.cuda.memory_allocated() - before) / 2**20 if held is not None else 0.0
    before = memory_in_use()
    held = globals()[loader](*args)
    return (memory_in_use() - before) * 1024 if held is not None else 0.0


def main():
    import gc

    args = parse_config(ServeArguments)[0]
    adapters = parse_adapters(args.adapters)
    if args.requests < 1:
        fail("--requests must be at least 1")

    import torch
    from transformers import AutoTokenizer

    from ftlab.models import resolve_model
    from ftlab.platforms import choose_to_run
    from ftlab.report import write_results

    # ---- 1. The adapters, and the one base they all need ----------------------------------------------------
    base_path = resolve_model(common_base(adapters))
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)
    # Serve on the best device there is, in its 16-bit format (auto): what a serving machine would do
    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    device, dtype_name = choice.device, choice.dtype if args.dtype == "auto" else args.dtype
    print(f"device: {device}, {dtype_name} ({choice.why}): the adapters are served there"
          + ("; memory added is GPU memory" if device == "cuda" else ""), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(base_path)

    # ---- 2. One base + N adapters: what they hold --------------------------------------------------------
    model = load_shared(base_path, adapters, dtype_name, device)
    base_mb, adapters_mb = shared_weights(model)
    shared_mb = resident_growth("load_shared", base_path, adapters, dtype_name, device)
    print(f"one base ({base_mb:.0f} MB of weights) + {len(adapters)} adapters ({adapters_mb:.1f} MB): "
          f"+{shared_mb:.0f} MB {'of GPU memory' if device == 'cuda' else 'resident'}", flush=True)

    # ---- 3. Requests in arrival order, interleaved across adapters; each switches to its adapter -------------
    requests = Requests(adapters, args.requests, tokenizer, args.max_new_tokens)

    def switch(name, shared=model):
        shared.set_adapter(name)  # which A, B every LoRA layer adds from now on: no weights move
        return shared

    answers, switch_seconds, generate_seconds = requests.serve(switch)
    rows = [{"adapter": name, "task": task, "folder": folder, "scores": requests.score(task, answers[name])}
            for name, task, folder in adapters]
    results = {"base": str(base_path), "device": device, "dtype": str(getattr(torch, dtype_name)),
               "requests": len(requests),
               "shared": {"weights_mb": round(base_mb + adapters_mb, 1), "adapters_mb": round(adapters_mb, 2),
                          "resident_mb": round(shared_mb)},
               "seconds_per_request": round(generate_seconds / len(requests), 2),
               "switch_ms_per_request": round(1000 * switch_seconds / len(requests), 3), "rows": rows}
    del model, switch
    gc.collect()

    # ---- 4. The same finetunes as N merged models: their memory, and do they answer the same? ----------------
    if args.compare_merged:
        results["merged"] = serve_merged(base_path, adapters, dtype_name, device, requests, rows, answers)

    table = results_table(results)
    print("\n" + table)
    write_results(out, results, table)


def common_base(adapters: list[tuple[str, str, str]]) -> str:
    """The base every adapter was trained on, as its adapter_config.json names it; one error line where a folder
    holds no adapter or the adapters name different bases (one base serves only its own adapters)."""
    import json
    from pathlib import Path

    from ftlab.models import what_is_in

    bases = set()
    for _, _, folder in adapters:
        if not Path(folder).exists():
            fail(f"{Path(folder)} does not exist; train it first (see this script's docstring)")
        if what_is_in(folder) != "adapter":  # (a folder with no model at all: what_is_in's own error line)
            fail(f"{folder} is not an adapter (no adapter_config.json): train one with 05_peft_lora")
        bases.add(json.loads((Path(folder) / "adapter_config.json").read_text())["base_model_name_or_path"])
    if len(bases) != 1:
        fail(f"the adapters were trained on different bases ({sorted(bases)}): one base serves only its own adapters")
    return bases.pop()


def shared_weights(model) -> tuple[float, float]:
    """MB of weights in one base with its adapters: (the base's own, the adapters' LoRA A and B matrices)."""
    from ftlab.quantization import weight_megabytes

    base_mb = weight_megabytes(model.get_base_model()) - sum(  # the base's own weights, without the LoRA matrices
        weight_megabytes(m) for n, m in model.named_modules() if n.endswith(("lora_A", "lora_B")))
    return base_mb, weight_megabytes(model) - base_mb


class Requests:
    """`per_adapter` requests for each adapter (the first eval examples of its task), interleaved in arrival order:
    every adapter's first request, then every adapter's second, and so on."""

    def __init__(self, adapters: list[tuple[str, str, str]], per_adapter: int, tokenizer, max_new_tokens: int):
        from ftlab.data import load_split

        self.sets = {task: load_split("describe_eval" if task == "describe" else "sft_eval")[:per_adapter]
                     for _, task, _ in adapters}
        self.queue = [(name, task, i) for i in range(per_adapter) for name, task, _ in adapters]
        self.tokenizer, self.max_new_tokens = tokenizer, max_new_tokens

    def __len__(self) -> int:
        return len(self.queue)

    def serve(self, pick) -> tuple[dict, float, float]:
        """Answer the queue in order, batch 1; `pick(name)` readies the model for a request (and is timed apart).
        (replies by adapter name, seconds picking, seconds answering)."""
        import time

        from ftlab.evaluation import TASK_SCORING, generate

        replies, picking, answering = {name: [] for name, _, _ in self.queue}, 0.0, 0.0
        for name, task, i in self.queue:
            start = time.perf_counter()
            ready = pick(name)
            picking += time.perf_counter() - start
            start = time.perf_counter()
            replies[name] += generate(ready, self.tokenizer, [self.sets[task][i]["messages"][:-1]], batch_size=1,
                                      max_new_tokens=self.max_new_tokens, hopeless=TASK_SCORING[task][1])
            answering += time.perf_counter() - start
        return replies, picking, answering

    def score(self, task: str, replies: list[str]) -> dict:
        """The task's metric on one adapter's replies."""
        from ftlab.data import gold_of
        from ftlab.evaluation import TASK_SCORING

        return TASK_SCORING[task][0](replies, [gold_of(ex) for ex in self.sets[task]])


def serve_merged(base_path: str, adapters: list[tuple[str, str, str]], dtype: str, device: str,
                 requests: Requests, rows: list[dict], answers: dict) -> dict:
    """The same requests served by N merged models, one per finetune: their weights, the memory they add and the
    time per request; each row gains the merged model's scores and how many of its answers match `answers`."""
    from ftlab.quantization import weight_megabytes

    merged = load_merged(base_path, adapters, dtype, device)
    held = {"weights_mb": round(sum(weight_megabytes(m) for m in merged.values()), 1),
            "resident_mb": round(resident_growth("load_merged", base_path, adapters, dtype, device))}
    own, _, seconds = requests.serve(lambda name: merged[name])
    held["seconds_per_request"] = round(seconds / len(requests), 2)
    for row in rows:
        row["merged_scores"] = requests.score(row["task"], own[row["adapter"]])
        row["same_answers"] = sum(a == b for a, b in zip(own[row["adapter"]], answers[row["adapter"]], strict=True))
    return held  # (the merged models are freed on return)


def results_table(results: dict) -> str:
    """Memory of the two ways to serve, then each adapter's score through the switch (and merged, if measured)."""
    from ftlab.report import markdown_table

    n = len(results["rows"])
    memory = "GPU memory" if results.get("device") == "cuda" else "resident memory"
    shared, merged = results["shared"], results.get("merged")
    serving = [[f"one base + {n} adapters (set_adapter per request)",
                f"{shared['weights_mb']} (adapters: {shared['adapters_mb']})", shared["resident_mb"]]]
    if merged:
        serving.append([f"{n} merged models", merged["weights_mb"], merged["resident_mb"]])
    merged_speed = (f"; the merged models, {merged['seconds_per_request']} s per request (no LoRA "
                    "matmuls beside each layer)") if merged else ""
    speed = (f"{results['requests']} requests, interleaved, batch 1: {results['seconds_per_request']} s per request "
             f"through the switch, {results['switch_ms_per_request']} ms of it to switch adapters{merged_speed}.")
    key = "exact_match"  # both metrics' strict score: the exact JSON, or a sentence with every fact and no more
    adapters = [[f"{r['adapter']} ({r['folder']})", r["task"], r["scores"]["n"], f"{r['scores'][key]:.1%}",
                 f"{r['merged_scores'][key]:.1%}" if "merged_scores" in r else "-",
                 f"{r['same_answers']}/{r['scores']['n']}" if "same_answers" in r else "-"] for r in results["rows"]]
    return "\n\n".join([
        markdown_table(["serving", "weights (MB)", f"{memory} added (MB)"], serving), speed,
        markdown_table(["adapter", "task", "requests", "score through the switch", "merged model alone",
                        "same answers"], adapters)])


if __name__ == "__main__":
    main()
