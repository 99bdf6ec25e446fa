"""Prompting before finetuning: what the untrained model gets from instructions, examples and a grammar.

Every later lesson trains. This one first asks what prompting alone gets on the same task, scored the same way,
because a prompt costs no training run and is the first thing to try:

1. zero-shot: the task's system prompt and the text, nothing else (what every lesson scores as "before");
2. few-shot: k worked examples from the training split as earlier turns of the chat (k = 1, 3, 8), the same k
   examples for every question, so a longer prompt is the only change;
3. constrained decoding: each of those again with every generated token held to the task's JSON Schema
   (ftlab/task.py) by a grammar. The grammar is xgrammar's, the structured-output engine behind vLLM and SGLang,
   used here as a transformers logits processor: at each step it masks every token that would break the schema.

A grammar guarantees the form (one JSON object, these keys in this order, an integer age, a YYYY-MM-DD date or
null); it cannot make a value right. Where the two columns part is where prompting stops and finetuning starts.

Run from the repository root inside the project's environment (`make setup`; `source .venv/bin/activate`):

    python 00_prompting/prompt.py --config 00_prompting/config.yaml
    python 00_prompting/prompt.py --config 00_prompting/config.yaml --shots 0 3 --eval_samples 8 \
        --handwritten_file none --output_dir runs/00_quick                     # a quick look
    python 00_prompting/prompt.py --config 00_prompting/config.yaml --model_name_or_path runs/02_sft \
        --shots 0 --output_dir runs/00_after_sft                               # a finetuned model, same table

Writes results.json, results.md (one row per prompt and decoding) and predictions.jsonl to --output_dir.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import EvalArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")

DECODING = {"free": "greedy, any token", "json_schema": "greedy, held to the task's JSON Schema (xgrammar)"}


@dataclass
class PromptArguments(EvalArguments):
    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={
        "help": "the model to prompt: the embedded base by default, or any run's folder"})
    shots: list[int] = field(default_factory=lambda: [0, 1, 3, 8], metadata={
        "help": "worked examples before the question, one row each (the first k of one seeded draw)"})
    decoding: list[str] = field(default_factory=lambda: list(DECODING), metadata={
        "help": "free (greedy) and/or json_schema (greedy, held to the schema)"})
    shot_seed: int = field(default=0, metadata={"help": "which training examples become the shots"})
    train_file: str | None = field(default=None, metadata={
        "help": "where the shots come from; default data/sft_train.jsonl (never an eval set)"})
    batch_size: int = field(default=32, metadata={"help": "generation batch while scoring"})
    output_dir: str = field(default="runs/00_prompting", metadata={"help": "results and predictions"})


def with_shots(example: dict, shots: list[dict]) -> dict:
    """The eval example asked after `shots`: system prompt, then each shot's question and answer, then the question.
    Its last message stays the gold answer, so the shared metric scores it as any eval example."""
    system, *question_and_answer = example["messages"]
    worked = [message for shot in shots for message in shot["messages"][1:]]  # user, assistant of each shot
    return {"messages": [system, *worked, *question_and_answer]}


def compile_schema(tokenizer, vocab_size: int | None = None):
    """The task's JSON Schema (ftlab/task.py) compiled by xgrammar against `tokenizer`: which tokens may follow which
    prefix. `vocab_size`: the model's, which may be larger than the tokenizer's (padding rows)."""
    import json

    import xgrammar

    from ftlab.task import JSON_SCHEMA

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    return xgrammar.GrammarCompiler(info).compile_json_schema(
        json.dumps(JSON_SCHEMA), any_whitespace=False, separators=(", ", ": "))  # the training answers' spacing


def json_schema_constraint(tokenizer, vocab_size: int):
    """A maker of xgrammar logits processors for the task's schema (one per generated batch: each keeps the state
    of its rows), the schema compiled once."""
    import xgrammar.contrib.hf

    grammar = compile_schema(tokenizer, vocab_size)
    return lambda: xgrammar.contrib.hf.LogitsProcessor(grammar)


def main():
    import random
    import time
    from dataclasses import asdict
    from types import SimpleNamespace

    # ---- 1. Config ---------------------------------------------------------------------------------------------
    args = parse_config(PromptArguments)[0]
    if unknown := [d for d in args.decoding if d not in DECODING]:
        fail(f"--decoding: unknown {unknown}; choose from {', '.join(DECODING)}")
    if any(k < 0 or k > 32 for k in args.shots):
        fail(f"--shots {args.shots}: each must be 0-32 (8 examples already make a prompt ~7x as long)")

    from ftlab.data import load_task
    from ftlab.evaluation import evaluate_all
    from ftlab.models import load_output, resolve_model
    from ftlab.platforms import choose_to_run
    from ftlab.report import write_predictions, write_results

    choice = choose_to_run()  # a GPU torch cannot use: the CPU, and the device line says why
    print(f"device: {choice.device}, {choice.dtype} ({choice.why})", flush=True)

    # ---- 2. Model and data: the eval sets every lesson scores, the shots from the training split ---------------
    model, tokenizer = load_output(resolve_model(args.model_name_or_path), device=choice.device)
    data = load_task(SimpleNamespace(**asdict(args), probe_file="none"))
    out = prepare_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=False)
    drawn = random.Random(args.shot_seed).sample(data.train, max(args.shots))  # k shots: the first k of one draw
    print(f"model: {args.model_name_or_path}; {data.describe()}")

    # ---- 3. Each prompt x decoding: score both eval sets with the shared metric, timed -------------------------
    constraint = json_schema_constraint(tokenizer, model.config.vocab_size) if "json_schema" in args.decoding else None
    rows, answers = [], {}
    for k in args.shots:
        eval_sets = {name: [with_shots(ex, drawn[:k]) for ex in examples] for name, examples in data.eval_sets.items()}
        first = tokenizer.apply_chat_template(eval_sets["synthetic"][0]["messages"][:-1], tokenize=False,
                                              add_generation_prompt=True)
        prompt_tokens = len(tokenizer(first, add_special_tokens=False)["input_ids"])  # of the first question
        for decoding in args.decoding:
            start = time.perf_counter()
            scores, answers[f"{decoding}_{k}"] = evaluate_all(
                model, tokenizer, eval_sets, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                bf16=choice.bf16, fp16=choice.fp16, constraint=constraint if decoding == "json_schema" else None)
            row = {"shots": k, "decoding": decoding, "prompt_tokens": prompt_tokens,
                   "seconds": round(time.perf_counter() - start, 1), "scores": scores}
            rows.append(row)
            print(f"{k} shots, {decoding:<11} ({prompt_tokens} prompt tokens): " + "; ".join(
                f"{name} {s['exact_match']:.1%} exact, {s['valid_json']:.0%} valid JSON" for name, s in scores.items())
                + f" ({row['seconds']:.0f} s)", flush=True)
            write_predictions(out / "predictions.jsonl", data.eval_sets, None, answers)  # as it stands: kept if stopped
            write_results(out, {"model": args.model_name_or_path, "device": choice.device, "rows": rows,
                                "shots": [ex["messages"][1]["content"] for ex in drawn]},
                          results_table(rows, list(data.eval_sets)), also="predictions.jsonl")

    # ---- 4. Report -----------------------------------------------------------------------------------------------
    print("\n" + results_table(rows, list(data.eval_sets)))


def results_table(rows: list[dict], sets: list[str]) -> str:
    """A markdown table: one row per prompt and decoding, with valid JSON, exact match and each field's accuracy."""
    from ftlab.report import markdown_table

    header = ["shots", "decoding", "prompt tokens"]
    header += [f"{s} {what}" for s in sets for what in ("valid JSON", "exact", "fields right")]
    header += ["seconds"]
    table = []
    for row in rows:
        cells = [row["shots"], row["decoding"], row["prompt_tokens"]]
        for s in sets:
            score = row["scores"][s]
            fields = sum(score["fields"].values()) / len(score["fields"])
            cells += [f"{score['valid_json']:.0%}", f"{score['exact_match']:.1%}", f"{fields:.0%}"]
        table.append(cells + [row["seconds"]])
    return markdown_table(header, table)


if __name__ == "__main__":
    main()
