"""00_prompting: few-shot prompts, decoding held to the task's JSON Schema, and the script end to end on the tiny model.

The real model's table (zero-shot, few-shot, with and without the grammar) is in 00_prompting/README.md, with its
command; here: the shots are placed as the script says, the grammar accepts every right answer in the data and
refuses wrong shapes, the constraint reaches generation, and the script writes one row per prompt and decoding."""

import importlib.util
import json

import pytest
from conftest import ROOT, run_script
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftlab.data import DATA_DIR, read_jsonl
from ftlab.evaluation import evaluate_all
from ftlab.task import FIELDS, JSON_SCHEMA, SYSTEM_PROMPT, task_of

xgrammar = pytest.importorskip("xgrammar")  # pyproject.toml installs it; a bare GPU image may lack it
SCRIPT = "00_prompting/prompt.py"
spec = importlib.util.spec_from_file_location("prompting", ROOT / SCRIPT)
prompting = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prompting)


def test_shots_come_between_the_system_prompt_and_the_question():
    train = read_jsonl(DATA_DIR / "sft_train.jsonl", "sft")[:3]
    question = read_jsonl(DATA_DIR / "sft_eval.jsonl", "sft")[0]
    asked = prompting.with_shots(question, train)["messages"]
    assert asked[0] == {"role": "system", "content": SYSTEM_PROMPT} and task_of(asked) == "extract"
    assert [m["role"] for m in asked] == ["system"] + ["user", "assistant"] * 4
    assert [m["content"] for m in asked[1:7]] == [m["content"] for shot in train for m in shot["messages"][1:]]
    assert asked[-2:] == question["messages"][1:]  # the question, then its gold answer: what the metric reads
    assert prompting.with_shots(question, [])["messages"] == question["messages"]  # zero-shot: unchanged


def accepts(compiled, text: str) -> bool:
    matcher = xgrammar.GrammarMatcher(compiled)
    return matcher.accept_string(text) and matcher.is_completed()


def test_the_schema_accepts_every_right_answer_and_refuses_wrong_shapes(tiny_model):
    """The grammar never forbids a right answer (every gold answer in the data passes, as written there), and it
    refuses what the metric would fail: a wrong type, a missing key, another key order, a date not in ISO form."""
    compiled = prompting.compile_schema(AutoTokenizer.from_pretrained(tiny_model))  # what the script compiles
    golds = [ex["messages"][-1]["content"] for name, kind in [("sft_train", "sft"), ("sft_eval", "sft"),
                                                              ("handwritten_eval", "handwritten")]
             for ex in read_jsonl(DATA_DIR / f"{name}.jsonl", kind)]
    assert len(golds) > 2000 and all(accepts(compiled, gold) for gold in golds)
    right = {"name": "Ana Ruiz", "age": 34, "city": "Porto", "email": None, "signup_date": "2021-03-05"}
    assert accepts(compiled, json.dumps(right))
    for wrong in ({**right, "age": "34"}, {k: v for k, v in right.items() if k != "city"},
                  dict(reversed(list(right.items()))), {**right, "signup_date": "March 5, 2021"}, {**right, "x": 1}):
        assert not accepts(compiled, json.dumps(wrong)), wrong
    assert list(JSON_SCHEMA["properties"]) == list(FIELDS) == JSON_SCHEMA["required"]


def test_the_constraint_reaches_generation(tiny_model):
    """The tiny random model never starts an answer with the schema's first key by itself; held to the schema,
    every answer does, and each finished one parses with the schema's keys."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    eval_sets = {"synthetic": read_jsonl(DATA_DIR / "sft_eval.jsonl", "sft")[:4]}
    free = evaluate_all(model, tokenizer, eval_sets, max_new_tokens=24)[1]["synthetic"]
    constraint = prompting.json_schema_constraint(tokenizer, model.config.vocab_size)
    held = evaluate_all(model, tokenizer, eval_sets, max_new_tokens=24, constraint=constraint)[1]["synthetic"]
    assert not any(answer.startswith('{"name": "') for answer in free)
    assert all(answer.startswith('{"name": "') for answer in held), held
    for answer in held:
        if answer.endswith("}"):
            assert list(json.loads(answer)) == list(FIELDS)


def test_the_script_writes_one_row_per_prompt_and_decoding(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = run_script(SCRIPT, "--config", "00_prompting/config.yaml", "--model_name_or_path", str(tiny_model),
                        "--shots", "0", "2", "--eval_samples", "3", "--max_new_tokens", "16",
                        "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["shots"], r["decoding"]) for r in rows] == [(0, "free"), (0, "json_schema"), (2, "free"),
                                                           (2, "json_schema")]
    assert rows[2]["prompt_tokens"] > rows[0]["prompt_tokens"]  # two worked examples make the prompt longer
    assert all(set(r["scores"]) == {"synthetic", "handwritten"} for r in rows)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 3 + 80 and {"free_0", "json_schema_2"} <= set(predictions[0])
    assert "| shots | decoding |" in (out / "results.md").read_text()


@pytest.mark.parametrize("flags, message", [(["--decoding", "beam"], "--decoding: unknown ['beam']"),
                                            (["--shots", "40"], "--shots [40]: each must be 0-32")])
def test_bad_choices_are_one_line(flags, message, tmp_path):
    result = run_script(SCRIPT, "--config", "00_prompting/config.yaml", "--output_dir", str(tmp_path / "x"), *flags)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
