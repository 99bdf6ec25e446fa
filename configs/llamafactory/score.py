"""Score what LLaMA-Factory trained with the course's own metric, so its runs sit in the same table as the rest.

`llamafactory-cli train x.yaml` leaves a folder: a LoRA adapter (adapter_config.json names its base), a whole
model, or, for `stage: rm`, either of those plus value_head.safetensors. This script runs in the course's
main environment (.venv: the same ftlab, transformers and metric as every train.py) and reads that folder:

- a model or an adapter answers the synthetic and hand-written eval sets and the general questions, greedily,
  scored by ftlab.metrics (exact match, per field, valid JSON), as 02_sft and 05_peft_lora report;
- a reward model scores the 70 held-out preference pairs, and the share where the chosen answer scores above
  the rejected one is reported per kind of mistake (as 03_rlhf/train_reward.py), next to LLaMA-Factory's own
  eval_accuracy on the same pairs.

It writes metrics.json (the keys of ftlab.report; training time, tokens and losses read from LLaMA-Factory's
trainer_state.json and train_results.json) and predictions.jsonl into the folder. Run from the repository root:

    .venv/bin/python configs/llamafactory/score.py runs/llamafactory/sft_lora
    .venv/bin/python configs/llamafactory/score.py runs/llamafactory/sft_lora --eval_before true  # the base too
    .venv/bin/python configs/llamafactory/score.py runs/llamafactory/qlora --load_in_4bit true
    .venv/bin/python configs/llamafactory/score.py runs/llamafactory/sft_full --base_model runs/02_sft
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import TaskArguments, fail
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks the package {e.name!r}: score with the course's main environment, "
                     f".venv/bin/python (`make setup`), not .venv-llamafactory") from None


@dataclass
class ScoreArguments(TaskArguments):
    eval_before: bool = field(default=False, metadata={
        "help": "also score the base model first (an adapter's base, or --base_model), for a before/after table"})
    base_model: str | None = field(default=None, metadata={
        "help": "the model an adapter goes on (default: the one adapter_config.json names), or a full run's "
                "starting point for --eval_before"})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "load the base in 4-bit NF4, as a QLoRA adapter was trained (qlora.yaml); default bf16/fp32"})
    technique: str | None = field(default=None, metadata={"help": "name in metrics.json; default llamafactory <folder>"})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "generation / scoring batch"})


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """LLaMA-Factory's own record of the run: (train_results.json, trainer_state.json)."""
    results = run_dir / "train_results.json"
    state = run_dir / "trainer_state.json"
    if not results.is_file() or not state.is_file():
        fail(f"{run_dir}: no train_results.json / trainer_state.json: not a finished LLaMA-Factory run (train it "
             f"first: .venv-llamafactory/bin/llamafactory-cli train configs/llamafactory/<file>.yaml)")
    return json.loads(results.read_text()), json.loads(state.read_text())


def load_model(run_dir: Path, args):
    """(base, model, tokenizer): `model` is what LLaMA-Factory trained, `base` what it started from (None for a
    full run without --base_model). An adapter is put onto its base; a full run's folder is the model itself."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlab.models import ModelNotFound, resolve_model
    from ftlab.quantization import nf4_config

    adapter = (run_dir / "adapter_config.json").is_file()
    base_ref = args.base_model or (json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
                                   if adapter else None)
    quantized = {"quantization_config": nf4_config(torch.bfloat16)} if args.load_in_4bit else {}
    try:  # fp32 weights (bf16 autocast while generating, where the CPU or GPU multiplies it natively)
        base = AutoModelForCausalLM.from_pretrained(resolve_model(base_ref), dtype=torch.float32, **quantized) \
            if base_ref else None
    except ModelNotFound as e:
        fail(f"{e} (the base of {run_dir}; pass --base_model)")
    tokenizer = AutoTokenizer.from_pretrained(run_dir)  # LLaMA-Factory saves the tokenizer it trained with
    if not adapter:
        return base, AutoModelForCausalLM.from_pretrained(run_dir, dtype=torch.float32), tokenizer
    return base, None, tokenizer  # the adapter goes on after the base is scored (PEFT changes the model in place)


def reward_scores(model, tokenizer, head: dict, pairs: list[dict], batch_size: int) -> list[tuple[float, float]]:
    """(chosen, rejected) scores: the value head read at each answer's last token, as LLaMA-Factory's pairwise
    trainer reads it (after its template's `<|im_end|>\\n`, which SmolLM2's chat template writes the same)."""
    import torch

    texts = [tokenizer.apply_chat_template(p["prompt"] + p[side], tokenize=False)
             for p in pairs for side in ("chosen", "rejected")]
    tokenizer.padding_side = "right"
    scores = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
            last = hidden[torch.arange(len(hidden)), batch["attention_mask"].sum(-1) - 1]
            scores += (last @ head["v_head.summary.weight"].float().T + head["v_head.summary.bias"].float()).squeeze(-1).tolist()
    return list(zip(scores[0::2], scores[1::2], strict=True))


def main():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ScoreArguments)
    parser.add_argument("run_dir", help="a LLaMA-Factory output_dir, e.g. runs/llamafactory/sft_lora")
    args, rest = parser.parse_args_into_dataclasses()
    run_dir = Path(rest.run_dir)
    if not run_dir.is_dir():
        fail(f"{run_dir}: no such folder (train it first: .venv-llamafactory/bin/llamafactory-cli train "
             f"configs/llamafactory/{run_dir.name}.yaml)")
    results, state = read_run(run_dir)

    from peft import PeftModel
    from safetensors.torch import load_file

    from ftlab.data import load_preference, load_task
    from ftlab.evaluation import score_task
    from ftlab.metrics import accuracy_by_kind
    from ftlab.platforms import choose_to_run
    from ftlab.report import run_facts, save_metrics, write_summary

    base, model, tokenizer = load_model(run_dir, args)
    technique = args.technique or f"llamafactory {run_dir.name}"
    facts = {"train_seconds": round(results["train_runtime"], 1), "trained_by": "LLaMA-Factory",
             "peak_memory_gib": None, "memory_device": "not recorded (LLaMA-Factory trains in its own process)"}
    log_history = state["log_history"]

    # ---- A reward model: held-out pairs, chosen above rejected? ----------------------------------------------
    if (run_dir / "value_head.safetensors").is_file():
        model = model or PeftModel.from_pretrained(base, run_dir)
        model.eval()
        _, held_out = load_preference()
        head = load_file(run_dir / "value_head.safetensors")
        accuracy = accuracy_by_kind(held_out, reward_scores(model, tokenizer, head, held_out,
                                                            args.per_device_eval_batch_size))
        own = json.loads((run_dir / "all_results.json").read_text()).get("eval_accuracy")
        print(f"held-out pairs where chosen scores above rejected: {accuracy['all']:.1%} (LLaMA-Factory's own "
              f"eval_accuracy: {own if own is None else f'{own:.1%}'})")
        for kind, share in accuracy.items():
            print(f"  {kind:<20} {share:6.0%}")
        save_metrics(str(run_dir), {"technique": technique, "pairwise_accuracy_after": accuracy,
                                    "llamafactory_eval_accuracy": own,
                                    "train_losses": [h["loss"] for h in log_history if "loss" in h], **facts},
                     log_history)
        return

    # ---- A model or an adapter: the task's eval sets, greedily, before (optional) and after ------------------
    data = load_task(args)
    choice = choose_to_run(use_cpu=True)  # the models are loaded on the CPU: its number format, not a GPU's

    settings = SimpleNamespace(per_device_eval_batch_size=args.per_device_eval_batch_size, bf16=choice.bf16,
                               fp16=choice.fp16)

    def score(label, m):  # the same scoring, and console line, as every train.py
        m.eval()
        return score_task(label, m, tokenizer, data, args, settings)

    if args.eval_before and base is None:
        fail("--eval_before true on a full run needs --base_model (the model the run started from)")
    before = score("before", base) if args.eval_before else None
    model = model or PeftModel.from_pretrained(base, run_dir)
    after = score("after", model)
    trainable = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) if base is not None and \
        isinstance(model, PeftModel) else sum(p.numel() for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    facts = {**run_facts(results["train_runtime"], (trainable, total), log_history,
                         state.get("num_input_tokens_seen") or None), **facts}
    write_summary(str(run_dir), technique, before, after, facts, data, log_history)


if __name__ == "__main__":
    main()
