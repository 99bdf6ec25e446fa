"""Model merging: combine two finetunes of one base into one model, with no training, and score it on both tasks.

Model A learned the extraction task (text -> JSON, 02_sft); model B learned to describe a JSON record in
one sentence (02_sft --task describe). Both started from the same SmolLM2, so their weights still sit
close together: an average of them, or the base plus both of their updates, is a model too, and may do
both jobs. This script runs a mergekit recipe (a commented YAML in mergekit/) and scores the result on
both tasks, next to what A and B each score on their own task. ftlab/merging.py holds the same
arithmetic in a few readable lines per method (tests check it equals mergekit's output).

Run from the repository root inside the project's environment (`make setup`). First the two models
(each a few minutes on a 2-core CPU: COURSE.md, "Time on a CPU"):

    python 02_sft/train.py --config 02_sft/config.yaml --output_dir runs/07_a_extract
    python 02_sft/train.py --config 02_sft/config.yaml --task describe --output_dir runs/07_b_describe

Then merges (each takes seconds; scoring both tasks takes about a minute):

    python 07_model_merging/merge.py --config 07_model_merging/config.yaml \
        --recipes 07_model_merging/mergekit/ties.yaml                     # one merge, kept in runs/07_merge
    python 07_model_merging/merge.py --config 07_model_merging/config.yaml --score_inputs true \
        --recipes 07_model_merging/mergekit/linear.yaml 07_model_merging/mergekit/slerp.yaml \
        --sweep 0,0.25,0.5,0.75,1 --output_dir runs/07_sweep_t             # the score-vs-t plot
    python 07_model_merging/merge.py --config 07_model_merging/config.yaml \
        --recipes 07_model_merging/mergekit/passthrough.yaml --output_dir runs/07_stack   # 40 layers
    mergekit-yaml 07_model_merging/mergekit/ties.yaml runs/07_ties_cli    # mergekit's own CLI (online)

`--sweep` varies each recipe's main knob: t for slerp (and for linear, B's share of the weights), density
for ties/dare, the scale `lambda` for task_arithmetic. `--model_a`, `--model_b`, `--base_model` merge other
folders with the same recipe. Writes results.json, results.md (and score_vs_<knob>.png for a sweep) to
--output_dir; the merged model itself too, unless it is a sweep (each fp32 merge is ~540 MB).

Where it runs (the first line says): mergekit merges on the CPU, in seconds at this size, and so DARE's seeded
drops give the same merged weights on every machine; every model is then scored on the GPU when there is one,
under its bf16 (or, on a T4, fp16) autocast as the training lessons score, else on the CPU as they do there.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

# The names the recipes use for the three inputs; --model_a/--model_b/--base_model replace them.
RUN_A, RUN_B, BASE = "runs/07_a_extract", "runs/07_b_describe", "HuggingFaceTB/SmolLM2-135M-Instruct"
TRAIN = {RUN_A: "python 02_sft/train.py --config 02_sft/config.yaml --output_dir runs/07_a_extract",
         RUN_B: "python 02_sft/train.py --config 02_sft/config.yaml --task describe --output_dir runs/07_b_describe"}
KNOB = {"linear": "t", "slerp": "t", "task_arithmetic": "lambda", "ties": "density", "dare_ties": "density",
        "dare_linear": "density"}  # what --sweep varies for each merge method (passthrough has no knob)
APPLIES = {"t": {"linear", "slerp"}, "density": {"ties", "dare_ties", "dare_linear"},
           "lambda": {"task_arithmetic", "ties", "dare_ties", "dare_linear"}}  # which methods --t/--density/--scale set


@dataclass
class MergeArguments:
    recipes: list[str] = field(metadata={"help": "mergekit YAML files (07_model_merging/mergekit/*.yaml)"})
    output_dir: str = field(default="runs/07_merge", metadata={"help": "results (and the merged model) go here"})
    t: float | None = field(default=None, metadata={"help": "slerp's t; for linear, B's share of the weights"})
    density: float | None = field(default=None, metadata={"help": "ties/dare: share of each task vector kept"})
    scale: float | None = field(default=None, metadata={"help": "mergekit's `lambda`: scales the summed update"})
    sweep: str | None = field(default=None, metadata={"help": "comma-separated values of each recipe's knob"})
    model_a: str | None = field(default=None, metadata={"help": f"replaces {RUN_A} in the recipes"})
    model_b: str | None = field(default=None, metadata={"help": f"replaces {RUN_B} in the recipes"})
    base_model: str | None = field(default=None, metadata={"help": f"replaces {BASE} in the recipes"})
    score_inputs: bool = field(default=False, metadata={"help": "also score the base, A and B on both tasks"})
    eval_samples: int = field(default=40, metadata={"help": "examples per task scored (the first N of each eval file)"})
    max_new_tokens: int = field(default=80, metadata={"help": "generation budget per answer"})
    batch_size: int = field(default=64, metadata={"help": "generation batch"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})


def read_recipe(path: str, replace: dict) -> dict:
    """A mergekit YAML as a dict, each input named by the recipe replaced (--model_a...) and resolved to a local
    folder (the base model: its embedded copy offline). A missing run folder stops with the command that makes it."""
    from ftlab.models import resolve_model
    from ftlab.startup import read_yaml_mapping

    recipe = read_yaml_mapping(path)
    if recipe.get("merge_method") not in (*KNOB, "passthrough"):
        fail(f"{path}: merge_method must be one of {[*KNOB, 'passthrough']}, got {recipe.get('merge_method')!r}")

    def resolve(ref: str) -> str:
        ref = replace.get(ref) or ref
        local = ref in TRAIN or ref.startswith((".", "/", "~")) or ref.count("/") != 1  # not a hub name
        if local and not Path(ref).expanduser().is_dir():
            fail(f"{path}: model {ref!r} not found" + (f"; train it first: {TRAIN[ref]}" if ref in TRAIN else ""))
        return resolve_model(ref)

    if "base_model" in recipe:
        recipe["base_model"] = resolve(recipe["base_model"])
    for entry in recipe.get("models", []) + [s for sl in recipe.get("slices", []) for s in sl["sources"]]:
        entry["model"] = resolve(entry["model"])
    return recipe


def set_knob(recipe: dict, name: str, value: float) -> dict:
    """The recipe with one knob set: t, density (every model), or lambda; for linear, t sets weights 1-t, t."""
    recipe = {**recipe, "parameters": {**recipe.get("parameters", {})}}
    models = [{**m, "parameters": {**m.get("parameters", {})}} for m in recipe.get("models", [])]
    if name == "t" and recipe["merge_method"] == "linear":
        for m, weight in zip(models, (1 - value, value), strict=True):
            m["parameters"]["weight"] = weight
    elif name == "density":
        for m in models:
            if m["model"] != recipe.get("base_model"):
                m["parameters"]["density"] = value
    else:
        recipe["parameters"][name] = value
    return {**recipe, "models": models} if models else recipe


def knob_value(config: dict, knob: str | None) -> float | None:
    """The knob's value in a (possibly edited) recipe, for the results table."""
    params, models = config.get("parameters", {}), config.get("models", [])
    if knob == "t" and config["merge_method"] == "linear":
        weights = [m.get("parameters", {}).get("weight", 1.0) for m in models]
        return weights[-1] / sum(weights)
    if knob == "density":
        return models[0].get("parameters", {}).get("density", 1.0)
    return params.get(knob, 1.0 if knob == "lambda" else None)


def configure(recipe: dict, args, value: float | None) -> dict:
    """The recipe with --t/--density/--scale set where its method takes them, and the sweep's value (if any) on
    its own knob."""
    method = recipe["merge_method"]
    overrides = {"t": args.t, "density": args.density, "lambda": args.scale}
    if value is not None:
        overrides[KNOB[method]] = value
    for name, given in overrides.items():
        if given is not None and method in APPLIES[name]:
            recipe = set_knob(recipe, name, given)
    return recipe


def input_folders(recipe: dict, replace: dict) -> dict[str, str]:
    """The base, A and B of a (resolved) recipe: the reference rows of the table (--score_inputs)."""
    names = [m["model"] for m in recipe.get("models", [])] or [s["sources"][0]["model"] for s in recipe["slices"]]
    return {"base": resolve_base(replace), "A (extract)": names[0], "B (describe)": names[-1]}


def resolve_base(replace: dict) -> str:
    from ftlab.models import resolve_model

    return resolve_model(replace.get(BASE) or BASE)


def own_scores(rows: list[dict], args, eval_sets) -> tuple[float | None, float | None]:
    """What A scores on extraction and B on describing: from the input rows if scored here, else from the runs'
    own metrics.json (02_sft scores the same first N eval examples), else None (no "keeps %" column)."""
    import json

    inputs = {r["model"]: r["scores"] for r in rows if r.get("role") == "input"}
    if inputs:
        return inputs["A (extract)"]["extract"]["exact_match"], inputs["B (describe)"]["describe"]["exact_match"]
    own = []
    for folder, task in ((args.model_a or RUN_A, "extract"), (args.model_b or RUN_B, "describe")):
        file = Path(folder) / "metrics.json"
        metrics = json.loads(file.read_text()) if file.is_file() else {}
        after = (metrics.get("after") or {}).get("synthetic") if metrics.get("task", "extract") == task else None
        own.append(after["exact_match"] if after and after["n"] == len(eval_sets[task]) else None)
    return tuple(own)


def main():
    import shutil
    import time

    args = parse_config(MergeArguments)[0]
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)
    sweep = [float(v) for v in args.sweep.split(",")] if args.sweep else [None]

    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlab.merge_experiments import merge_table, plot_sweep, score_both_tasks, two_task_eval_sets
    from ftlab.platforms import choose_to_run
    from ftlab.report import write_results
    from ftlab.resources import count_parameters

    # ---- 0. Where it runs: the merges on the CPU, the scoring on the best device (ftlab/platforms.py) -------
    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    print(f"device: {choice.device}, {choice.dtype} ({choice.why}): every model is scored "
          "there; mergekit merges on the CPU (seconds at this size)", flush=True)

    # ---- 1. The recipes, each input resolved to a folder (a missing one stops here, before any work) ------
    replace = {RUN_A: args.model_a, RUN_B: args.model_b, BASE: args.base_model}
    recipes = {Path(path).stem: read_recipe(path, replace) for path in args.recipes}
    eval_sets = two_task_eval_sets(args.eval_samples)

    def score(label: str, folder: str, **facts) -> dict:
        """Load a model folder and score it on both tasks; one row of the results."""
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(choice.device)
        scored = score_both_tasks(label, model, AutoTokenizer.from_pretrained(folder), eval_sets,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        return {"model": label, **facts, "parameters": count_parameters(model)[1],
                "layers": model.config.num_hidden_layers, **scored}

    # ---- 2. What merging starts from: the base, A and B, each on both tasks (--score_inputs) -------------
    rows = []
    if args.score_inputs:
        inputs = input_folders(next(iter(recipes.values())), replace)
        rows += [score(label, folder, role="input") for label, folder in inputs.items()]

    # ---- 3. Merge (mergekit) and score, for each recipe and each value of its knob ---------------------
    for stem, recipe in recipes.items():
        method, knob = recipe["merge_method"], KNOB.get(recipe["merge_method"])
        for value in sweep if knob else [None]:
            config = configure(recipe, args, value)
            used = knob_value(config, knob)
            label = stem + (f" {knob}={used:g}" if used is not None else "")
            folder = out / (stem + (f"_{knob}{value:g}" if value is not None else ""))
            start = time.perf_counter()
            # random_seed: DARE's drops are random; write_model_card=False: the card asks the hub about every
            # input (an offline machine raised a ConnectError there), and results.json says more
            run_merge(MergeConfiguration.model_validate(config), str(folder),
                      MergeOptions(quiet=True, copy_tokenizer=True, random_seed=0, write_model_card=False))
            seconds = time.perf_counter() - start
            rows.append(score(label, str(folder), role="merge", recipe=stem, method=method, knob=knob,
                              value=used, merge_seconds=round(seconds, 1)))
            if args.sweep:  # keep the scores, not ~540 MB of weights per point
                shutil.rmtree(folder)

    # ---- 4. Report: a table (with how much of A's and B's own score each merge keeps), a plot for a sweep --
    a_own, b_own = own_scores(rows, args, eval_sets)
    table = merge_table(rows, a_own, b_own)
    print("\n" + table)
    plotted = args.sweep and plot_sweep(rows, out / "score_vs_knob.png", a_own, b_own)
    kept = "" if args.sweep else f"the merged model{'s' if len(recipes) > 1 else ''} in {out}/<recipe name>/"
    write_results(out, {"rows": rows, "a_own": a_own, "b_own": b_own, "eval_samples": args.eval_samples}, table,
                  also="score_vs_knob.png" if plotted else kept)


if __name__ == "__main__":
    main()
