"""Merging LoRA adapters: two adapters of one base, combined by PEFT into a third, scored on both tasks.

An adapter is a low-rank update, delta_W = (alpha / r) * B @ A, for each weight it targets. Two adapters
trained on the same base can be combined without training, with PEFT's `add_weighted_adapter`:
- `cat` stacks the two adapters' ranks (r_A + r_B): delta = w_A delta_A + w_B delta_B exactly, which is
  task arithmetic on the two updates, at the cost of a rank-32 adapter;
- `svd` computes that same sum and cuts it back to rank r with an SVD (exact up to the truncation);
- `linear`, `ties`, `dare_linear`, `dare_ties` combine the A matrices with each other and the B matrices
  with each other. The product of the sums is not the sum of the products: (B1 + B2)(A1 + A2) adds the
  cross terms B1 A2 + B2 A1, which neither adapter learned. PEFT's docs call `linear` "a very rough
  approximation"; the table in the README shows what it costs here;
- `ties_svd`, `dare_ties_svd`, ... prune the exact delta_W (as 07's merge.py does to whole models), then SVD.

Run from the repository root inside the project's environment (`make setup`). First the two adapters
(about 7 and 6 minutes on a 2-core CPU), then the merges (seconds each; scoring both tasks, ~1 minute):

    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --output_dir runs/05_peft_lora
    python 05_peft_lora/train.py --config 05_peft_lora/config.yaml --task describe --output_dir runs/07_b_lora
    python 07_model_merging/merge_adapters.py --config 07_model_merging/adapters.yaml
    python 07_model_merging/merge_adapters.py --config 07_model_merging/adapters.yaml \
        --combinations cat ties_svd --weights 1.0 0.5 --density 0.3

Writes results.json and results.md to --output_dir, and with --save true each merged adapter.

Where it runs (the first line says): the base, both adapters and their combinations on the GPU when there is one
(PEFT combines them where they are), scored under its bf16 (on a T4, fp16) autocast as the training lessons score;
else on the CPU, as they do there.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

COMBINATIONS = ("cat", "linear", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd")
PRUNED = ("ties", "dare", "magnitude")  # combinations that take a density


@dataclass
class AdapterArguments:
    adapter_a: str = field(default="runs/05_peft_lora", metadata={"help": "LoRA adapter trained on extraction"})
    adapter_b: str = field(default="runs/07_b_lora", metadata={"help": "LoRA adapter trained on describe"})
    base_model: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "the adapters' base"})
    combinations: list[str] = field(default_factory=lambda: ["cat", "svd", "linear", "ties", "dare_ties"],
                                    metadata={"help": f"PEFT combination types: {', '.join(COMBINATIONS)}"})
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata={"help": "weights of A and B"})
    density: float = field(default=0.5, metadata={"help": "ties/dare/magnitude_prune: share of entries kept"})
    output_dir: str = field(default="runs/07_adapters", metadata={"help": "results.json, results.md"})
    save: bool = field(default=False, metadata={"help": "also save each merged adapter to output_dir/<name>"})
    score_inputs: bool = field(default=True, metadata={"help": "also score the base, A and B on both tasks"})
    eval_samples: int = field(default=40, metadata={"help": "examples per task scored"})
    max_new_tokens: int = field(default=80, metadata={"help": "generation budget per answer"})
    batch_size: int = field(default=64, metadata={"help": "generation batch"})
    seed: int = field(default=0, metadata={"help": "seeds DARE's random drops"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})


def check(args) -> None:
    """Bad input as one line, before anything loads."""
    from pathlib import Path

    for name in ("adapter_a", "adapter_b"):
        if not (Path(getattr(args, name)) / "adapter_config.json").is_file():
            fail(f"--{name} {getattr(args, name)}: no adapter_config.json there; train one first (see the docstring)")
    unknown = [c for c in args.combinations if c not in COMBINATIONS]
    if unknown:
        fail(f"--combinations {' '.join(unknown)}: PEFT knows {', '.join(COMBINATIONS)}")
    if len(args.weights) != 2:
        fail(f"--weights: give two numbers (A's and B's), got {len(args.weights)}")
    if not 0 < args.density <= 1:
        fail(f"--density {args.density}: must be in (0, 1]")


def main():
    import time

    args = parse_config(AdapterArguments)[0]
    check(args)
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlab.merge_experiments import merge_table, score_both_tasks, two_task_eval_sets
    from ftlab.models import resolve_model
    from ftlab.platforms import choose_to_run
    from ftlab.report import write_results
    from ftlab.resources import count_parameters

    # ---- 0. Where it runs: the best device there is (ftlab/platforms.py), said in the first line -------------
    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    print(f"device: {choice.device}, {choice.dtype} ({choice.why}): the base and its "
          "adapters, combined and scored there", flush=True)

    # ---- 1. The base with both adapters loaded beside each other ------------------------------------------
    base_path = resolve_model(args.base_model)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).to(choice.device)
    tokenizer = AutoTokenizer.from_pretrained(args.adapter_a)
    eval_sets = two_task_eval_sets(args.eval_samples)
    parameters = count_parameters(model)[1]  # what each merged model serves once its adapter is folded in

    def score(label: str, scored_model, **facts) -> dict:
        scored = score_both_tasks(label, scored_model, tokenizer, eval_sets, max_new_tokens=args.max_new_tokens,
                                  batch_size=args.batch_size)
        return {"model": label, **facts, "layers": model.config.num_hidden_layers, "parameters": parameters, **scored}

    rows = [score("base", model, role="input")] if args.score_inputs else []
    model = PeftModel.from_pretrained(model, args.adapter_a, adapter_name="a")
    model.load_adapter(args.adapter_b, adapter_name="b")
    if args.score_inputs:
        for name, label in (("a", "A (extract LoRA)"), ("b", "B (describe LoRA)")):
            model.set_adapter(name)
            rows.append(score(label, model, role="input"))

    # ---- 2. Each combination: a new adapter made from the two, made active, scored --------------------------
    for combination in args.combinations:
        pruned = combination.startswith(PRUNED)
        name = combination + (f" density={args.density:g}" if pruned else "")
        torch.manual_seed(args.seed)  # DARE drops at random
        start = time.perf_counter()
        model.add_weighted_adapter(["a", "b"], args.weights, adapter_name=combination, combination_type=combination,
                                   density=args.density if pruned else None)
        seconds = time.perf_counter() - start
        model.set_adapter(combination)
        rank = model.peft_config[combination].r
        rows.append(score(f"{name} (r={rank})", model, role="merge", combination=combination, rank=rank,
                          merge_seconds=round(seconds, 1)))
        if args.save:
            model.save_pretrained(out, selected_adapters=[combination])  # PEFT writes it to out/<combination>/

    # ---- 3. Report -------------------------------------------------------------------------------------
    own = {r["model"]: r["scores"] for r in rows if r["role"] == "input"}
    a_own = own["A (extract LoRA)"]["extract"]["exact_match"] if own else None
    b_own = own["B (describe LoRA)"]["describe"]["exact_match"] if own else None
    table = merge_table(rows, a_own, b_own)
    print("\n" + table)
    results = {"rows": rows, "a_own": a_own, "b_own": b_own, "weights": args.weights, "density": args.density}
    write_results(out, results, table, also=f"adapters in {out}/<combination>/" if args.save else "")


if __name__ == "__main__":
    main()
