"""Load the committed JSONL data files, and refuse any line that is not exactly what training expects.

A finetune learns whatever the data shows it, mistakes included, and a bad line rarely crashes a
trainer: it just teaches quietly. So every line is checked here, and the first bad one stops the run
with its file and line number. Nothing is skipped.
"""

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ftlab.errors import LearnerError
from ftlab.task import DESCRIBE_PROMPT, FIELDS, prompt_messages, task_of

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

SPLITS = {"sft_train": "sft", "sft_eval": "sft", "preference": "preference", "rl_prompts": "rl",
          "handwritten_eval": "handwritten", "general_probe": "probe", "prose_train": "text", "prose_eval": "text",
          "describe_train": "describe", "describe_eval": "describe"}

# The wrong answers in preference.jsonl, one per kind of mistake a base model makes.
ERROR_KINDS = ("prose", "markdown_fence", "missing_key", "wrong_type", "unnormalised_date", "yaml",
               "hallucinated_value")

# Which top-level keys each kind of record has (no more, no fewer). The two hand-written files hold only
# what a person wrote: a text and its answer (read back in sft form, with the prompt of ftlab.task), and
# general questions with their accepted answers (the forgetting probe).
KEYS = {"sft": ("messages",), "describe": ("messages",), "preference": ("prompt", "chosen", "rejected", "error"), "rl": ("prompt", "answer"),
        "handwritten": ("text", "answer"), "probe": ("question", "answers"), "text": ("text",)}

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class DataError(LearnerError, ValueError):
    """A line of a data file is malformed; the message is 'path:lineno: what is wrong'."""


def check_target(content) -> dict:
    """Parse an answer string and check it is the schema; return the dict, or raise ValueError/TypeError."""
    if not isinstance(content, str):
        raise TypeError("answer content must be a string")
    try:
        target = json.loads(content)
    except json.JSONDecodeError:
        raise ValueError(f"answer content is not valid JSON: {content[:40]!r}") from None
    if not isinstance(target, dict):
        raise TypeError("answer content is not a JSON object")
    if list(target) != list(FIELDS):
        raise ValueError(f"target keys must be exactly {list(FIELDS)} in this order, got {list(target)}")
    if not isinstance(target["name"], str) or not target["name"].strip():
        raise ValueError("name must be a non-empty string")
    # bool is a subclass of int in Python, so it has to be ruled out by name.
    age = target["age"]
    if age is not None and type(age) is not int:
        raise ValueError(f"age must be an integer or null, got {age!r}")
    for field in ("city", "email"):
        if target[field] is not None and not isinstance(target[field], str):
            raise ValueError(f"{field} must be a string or null, got {target[field]!r}")
    signup = target["signup_date"]
    if signup is not None:
        if not isinstance(signup, str) or not ISO_DATE.fullmatch(signup):
            raise ValueError(f"bad signup_date {signup!r}: want YYYY-MM-DD or null")
        try:
            date.fromisoformat(signup)
        except ValueError:
            raise ValueError(f"bad signup_date {signup!r}: not a real date") from None
    return target


def check_messages(messages, where: str, roles: tuple) -> None:
    """A list of {"role", "content"} dicts with these roles, in this order."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where} must be a non-empty list of messages")
    for message in messages:
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(f'{where}: each message needs exactly "role" and "content"')
        if not isinstance(message["content"], str):
            raise TypeError(f"{where}: message content must be a string")
    got = tuple(m["role"] for m in messages)
    if got[-1] != roles[-1]:
        raise ValueError(f"{where}: last message is from {got[-1]!r}, not the {roles[-1]}")
    if got != roles:
        raise ValueError(f"{where}: roles are {list(got)}, want {list(roles)}")


def check_prompt(messages) -> None:
    """The system prompt of ftlab.task, then the user's text: stale prompts are caught here."""
    if messages[:2] != prompt_messages(messages[1]["content"]):
        raise ValueError("system prompt differs from ftlab.task.SYSTEM_PROMPT")


def check_record(record, kind: str) -> None:
    if not isinstance(record, dict):
        raise TypeError("line is not a JSON object")
    for key in KEYS[kind]:
        if key not in record:
            raise ValueError(f'missing key "{key}"')
    extra = sorted(set(record) - set(KEYS[kind]))
    if extra:
        raise ValueError(f"unexpected keys {extra}")
    if kind in ("handwritten", "text"):  # plain text (for continued pre-training), or a text and its answer
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise ValueError("text must be a non-empty string")
        if kind == "text":
            return
        if not isinstance(record["answer"], dict):
            raise TypeError("answer must be a JSON object")
        check_target(json.dumps(record["answer"], ensure_ascii=False))
        return
    if kind == "probe":
        if not isinstance(record["question"], str) or not record["question"].strip():
            raise ValueError("question must be a non-empty string")
        answers = record["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise ValueError("answers must be a non-empty list of strings")
        return
    if kind == "describe":  # the second task (07_model_merging): a record's JSON in, one sentence out
        check_messages(record["messages"], "messages", ("system", "user", "assistant"))
        if record["messages"][0]["content"] != DESCRIBE_PROMPT:
            raise ValueError("system prompt differs from ftlab.task.DESCRIBE_PROMPT")
        check_target(record["messages"][1]["content"])
        sentence = record["messages"][2]["content"]
        if not sentence.strip() or "\n" in sentence:
            raise ValueError("the answer must be one sentence on one line")
        return
    if kind == "sft":
        check_messages(record["messages"], "messages", ("system", "user", "assistant"))
        check_prompt(record["messages"])
        check_target(record["messages"][-1]["content"])
        return
    check_messages(record["prompt"], "prompt", ("system", "user"))
    check_prompt(record["prompt"])
    if kind == "rl":
        check_target(record["answer"])
        return
    check_messages(record["chosen"], "chosen", ("assistant",))
    check_messages(record["rejected"], "rejected", ("assistant",))
    check_target(record["chosen"][0]["content"])
    if record["rejected"][0]["content"] == record["chosen"][0]["content"]:
        raise ValueError("rejected is the same as chosen")
    if record["error"] not in ERROR_KINDS:
        raise ValueError(f"error must be one of {list(ERROR_KINDS)}, got {record['error']!r}")


def read_jsonl(path, kind: str) -> list[dict]:
    """Every record of a JSONL file of this kind (a key of KEYS), validated; "handwritten" comes back as "sft"."""
    if kind not in KEYS:
        raise ValueError(f"kind must be one of {list(KEYS)}, got {kind!r}")
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, not UTF-8 text
        raise DataError(f"{path}: cannot read it ({e})") from None
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: the file is empty (want one JSON record per line)")
    records = []
    for lineno, line in enumerate(lines, start=1):
        try:
            if not line.strip():
                raise ValueError("empty line")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
            check_record(record, kind)
        except (ValueError, TypeError) as e:  # every check raises one of these, with a one-line reason
            raise DataError(f"{path}:{lineno}: {e}") from None
        records.append(record)
    if kind == "handwritten":
        records = [as_sft(r["text"], r["answer"]) for r in records]
    return records


def as_sft(text: str, answer: dict) -> dict:
    """A text and its answer as an sft record, with the one prompt of ftlab.task."""
    return {"messages": prompt_messages(text) + [{"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)}]}


def load_split(name: str) -> list[dict]:
    """One committed file of data/, by name: a key of SPLITS."""
    if name not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {name!r}")
    return read_jsonl(DATA_DIR / f"{name}.jsonl", SPLITS[name])


def gold_of(example: dict) -> dict:
    """The correct answer of an sft, rl or preference record, as a dict; for a describe record, the record it
    describes (what its sentence is scored against)."""
    if "messages" in example and task_of(example["messages"]) == "describe":
        return json.loads(example["messages"][1]["content"])
    if "messages" in example:
        return json.loads(example["messages"][-1]["content"])
    if "answer" in example:
        return json.loads(example["answer"])
    if "chosen" in example:
        return json.loads(example["chosen"][0]["content"])
    raise ValueError("not an sft, rl or preference record")


def to_prompt_completion(example: dict) -> dict:
    """An sft record in TRL's conversational prompt-completion form, so loss falls on the answer only."""
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


@dataclass
class TaskData:
    """What every lesson trains and scores on: training rows, named eval sets, and the forgetting probe."""

    train: list[dict]
    eval_sets: dict[str, list[dict]]  # "synthetic" (the generator's held-out shapes), "handwritten"; the describe
    # task has one set, "synthetic" (its input is a record, not written text, so there is no hand-written set)
    questions: list[dict]

    def sft_datasets(self, eval_loss: bool = True):
        """(train, eval) as `datasets.Dataset`s of prompt/completion pairs, so the loss covers the answer only; eval
        is None without `eval_loss` (a run with `eval_strategy: no` computes no eval loss).

        SmolLM2's chat template has no {% generation %} markers, so TRL's `assistant_only_loss` cannot find
        the answer tokens; splitting each conversation into prompt and completion works with any template."""
        from datasets import Dataset

        return (Dataset.from_list([to_prompt_completion(r) for r in self.train]),
                Dataset.from_list([to_prompt_completion(r) for r in self.eval_sets["synthetic"]]) if eval_loss else None)

    def describe(self) -> str:
        sizes = ", ".join(f"{len(rows)} {name}" for name, rows in self.eval_sets.items())
        return f"data: {len(self.train)} train examples; eval: {sizes}; {len(self.questions)} general questions"


def load_task(args) -> TaskData:
    """Read the files named by a script's `TaskArguments` (defaults in data/); raise DataError on a bad line.

    `--handwritten_file none` / `--probe_file none` skip a set; `--eval_samples N` keeps the first N synthetic
    eval examples (generation is slow on a CPU: a fixed subset keeps before/after comparable). `--task describe`
    reads the second task's files (describe_train/describe_eval.jsonl) instead."""

    def optional(path, default, kind):
        return [] if path and path.lower() == "none" else read_jsonl(path or DATA_DIR / default, kind)

    task = getattr(args, "task", "extract")
    if task not in ("extract", "describe"):
        raise DataError(f"--task {task!r}: must be extract (text -> JSON) or describe (JSON -> one sentence)")
    kind = "sft" if task == "extract" else "describe"  # also the files' prefix: sft_train.jsonl, describe_train.jsonl
    train = read_jsonl(args.train_file or DATA_DIR / f"{kind}_train.jsonl", kind)
    synthetic = read_jsonl(args.eval_file or DATA_DIR / f"{kind}_eval.jsonl", kind)[: args.eval_samples or None]
    handwritten = optional(args.handwritten_file, "handwritten_eval.jsonl", "handwritten") if task == "extract" else []
    questions = optional(args.probe_file, "general_probe.jsonl", "probe")
    return TaskData(train, {"synthetic": synthetic, **({"handwritten": handwritten} if handwritten else {})}, questions)


def load_preference(path: str | None = None, eval_pairs: int = 70) -> tuple[list[dict], list[dict]]:
    """(train, held-out) preference pairs: the last `eval_pairs` lines of the file are held out. In the committed
    data/preference.jsonl the last 70 hold 10 pairs of each kind of mistake, so accuracy can be read per kind."""
    pairs = read_jsonl(path or DATA_DIR / "preference.jsonl", "preference")
    if not 0 < eval_pairs < len(pairs):
        raise DataError(f"--eval_pairs {eval_pairs}: must be between 1 and {len(pairs) - 1} (the file has {len(pairs)} pairs)")
    return pairs[:-eval_pairs], pairs[-eval_pairs:]


def preference_dataset(pairs: list[dict]):
    """Preference pairs as a `datasets.Dataset` in TRL's explicit-prompt form: prompt, chosen, rejected (the
    `error` label stays out: it is for reading results per kind of mistake, not for training)."""
    from datasets import Dataset

    return Dataset.from_list([{key: pair[key] for key in ("prompt", "chosen", "rejected")} for pair in pairs])
