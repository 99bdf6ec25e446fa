"""A reward that needs no reward model: check the answer against the gold JSON (RL with verifiable rewards).

A learned reward model is a guess at what people prefer, and a policy trained against it will find and
exploit its mistakes (reward hacking). Where the right answer can be checked by a program, as here, the
check itself is the reward: it cannot be fooled, only satisfied. It is graded, not pass/fail, so that an
answer with four fields right earns more than one with two, and a policy still far from exact has a
slope to climb:

    0      not exactly one JSON object (prose around it, a ``` fence, YAML): a program reading it would fail
    +0.25  it is one JSON object
    +0.25  it is our schema: the five keys in order, each of its type, dates as YYYY-MM-DD
    +0.5   x the share of the five fields whose value is right (type included: "30" is not 30)

So the exact answer scores 1.0 and every kind of mistake in data/preference.jsonl scores less.
"""

from __future__ import annotations

import json

from ftlab.data import check_target
from ftlab.metrics import parse_json_object, same
from ftlab.task import FIELDS


def json_reward(text: str, gold: dict) -> float:
    """The graded reward in [0, 1] of one answer `text` against the `gold` dict (see the module's table)."""
    parsed = parse_json_object(text)
    if parsed is None:
        return 0.0
    reward = 0.25
    try:
        check_target(json.dumps(parsed, ensure_ascii=False))
        reward += 0.25
    except (ValueError, TypeError):  # a key missing, extra or out of order, a wrong type, a date not ISO
        pass
    right = sum(field in parsed and same(parsed[field], gold[field]) for field in FIELDS)
    return reward + 0.5 * right / len(FIELDS)


def verifiable_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """`json_reward` as a TRL reward function: TRL passes each completion (a list of chat messages, or a string)
    and the dataset's other columns by name; data/rl_prompts.jsonl has the gold JSON in `answer`."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [json_reward(text, json.loads(gold)) for text, gold in zip(texts, answer, strict=True)]
