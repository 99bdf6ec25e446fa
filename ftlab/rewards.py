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


def tied_groups(rewards_per_func, num_generations: int, names: list[str], weights=None) -> dict[str, float]:
    """The share of groups (the `num_generations` answers to one prompt) whose answers all scored the same, on each
    reward and on their weighted sum: such a group has nothing to compare, so it teaches nothing.

    `rewards_per_func` is (answers, rewards), the answers to one prompt next to each other, as GRPO and RLOO score
    them. TRL logs `frac_reward_zero_std`, but under `multi_objective_aggregation: normalize_then_sum` it measures
    the std of the whole batch, which is 0 only when every group of the batch is tied: one tied group beside a
    varied one reads 0.0 there, and 0.5 here."""
    import torch

    rewards = torch.as_tensor(rewards_per_func, dtype=torch.float32)
    weights = torch.ones(rewards.shape[1]) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    columns = {**{name: rewards[:, i] for i, name in enumerate(names)}, "total": rewards @ weights.to(rewards)}
    shares = {}
    for name, column in columns.items():
        grouped = column.view(-1, num_generations)
        spread = grouped.amax(dim=1) - grouped.amin(dim=1)
        shares[name] = (spread <= 1e-6 * (1 + grouped.abs().amax(dim=1))).float().mean().item()
    return shares


def grpo_advantages(rewards_per_func, num_generations: int, weights=None, aggregation: str = "normalize_then_sum",
                    scale_rewards: str = "group"):
    """GRPO's advantage of each answer, as TRL 1.15's GRPOTrainer computes it (a test checks this against it).

    `sum_then_normalize` (TRL's default): the weighted sum of the rewards, minus its group's mean, divided by its
    group's std (`scale_rewards: group`), the batch's std (`batch`) or nothing (`none`).
    `normalize_then_sum` (rl.yaml): each reward is standardised within its group (minus the group's mean, over
    the group's std), the results are summed with the weights, and the sum is standardised across the whole batch
    (minus the batch mean, over the batch std). `scale_rewards` plays no part. A reward on which a group's answers
    tie adds 0 to that group; the other reward then sets the group's advantages on its own, at full scale: a gap
    of 0.01 in the reward model's score weighs as much as a JSON reward of 0 against 1."""
    import torch

    rewards = torch.as_tensor(rewards_per_func, dtype=torch.float32)
    weights = torch.ones(rewards.shape[1]) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    eps = 1e-4  # TRL's: a tied group divides 0 by eps
    if aggregation == "normalize_then_sum":
        grouped = rewards.view(-1, num_generations, rewards.shape[1])
        standardised = (grouped - grouped.mean(dim=1, keepdim=True)) / (grouped.std(dim=1, keepdim=True) + eps)
        total = standardised.reshape(-1, rewards.shape[1]) @ weights
        return (total - total.mean()) / (total.std() + eps)
    if aggregation != "sum_then_normalize":
        raise ValueError(f"aggregation {aggregation!r}: normalize_then_sum or sum_then_normalize")
    total = rewards @ weights
    grouped = total.view(-1, num_generations)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale_rewards == "group":
        return advantages / (grouped.std(dim=1).repeat_interleave(num_generations) + eps)
    return advantages / (total.std() + eps) if scale_rewards == "batch" else advantages
