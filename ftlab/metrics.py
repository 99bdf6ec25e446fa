"""Score model outputs against the gold JSON: is it JSON at all, is it exactly right, which fields are right.

The scoring is strict on purpose. Finetuning here is about form, so an answer a human could read
("Sure! Here is the JSON: ...", a ```json fence, "age": "30") counts as wrong: a program reading the
output would fail on it, and those are exactly the habits training should remove.
"""

import json

from ftlab.task import FIELDS


def parse_json_object(text: str) -> dict | None:
    """The output as a dict if it is exactly one JSON object (whitespace around it allowed), else None."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text.strip())  # raises on anything before or after the object
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def same(predicted, gold) -> bool:
    """Equal and of the same type: 30.0, "30" and True are not the int 30 (in Python, True == 1)."""
    return type(predicted) is type(gold) and predicted == gold


def score(predictions: list[str], golds: list[dict]) -> dict:
    """Rates in [0, 1]: valid JSON, exact match (key order ignored), and accuracy of each field."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} golds")
    if not golds:
        raise ValueError("nothing to score")
    valid = exact = 0
    right = {field: 0 for field in FIELDS}
    for text, gold in zip(predictions, golds, strict=True):
        parsed = parse_json_object(text)
        if parsed is None:
            continue  # invalid output is wrong on every count
        valid += 1
        if set(parsed) == set(gold) and all(same(parsed[k], gold[k]) for k in gold):
            exact += 1
        for field in FIELDS:
            if field in parsed and same(parsed[field], gold.get(field)):
                right[field] += 1
    n = len(golds)
    return {
        "n": n,
        "valid_json": valid / n,
        "exact_match": exact / n,
        "fields": {field: right[field] / n for field in FIELDS},
    }


def format_scores(before: dict | None, after: dict) -> str:
    """A small table of percentages, one row per measure, columns "before" (optional) and "after"."""
    runs = [("before", before), ("after", after)] if before is not None else [("after", after)]
    rows = [("valid JSON", lambda s: s["valid_json"]), ("exact match", lambda s: s["exact_match"])]
    rows += [(field, lambda s, f=field: s["fields"][f]) for field in FIELDS]
    width = max(len(label) for label, _ in rows)
    lines = [" " * width + "".join(f"{title:>9}" for title, _ in runs)]
    for label, get in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{100 * get(s):>8.1f}%" for _, s in runs))
    lines.append(f"{'n':<{width}}" + "".join(f"{s['n']:>9}" for _, s in runs))
    return "\n".join(lines)
