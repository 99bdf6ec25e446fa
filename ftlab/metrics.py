"""Score model outputs against the gold JSON: is it JSON at all, is it exactly right, which fields are right.

The scoring is strict on purpose. Finetuning here is about form, so an answer a human could read
("Sure! Here is the JSON: ...", a ```json fence, "age": "30") counts as wrong: a program reading the
output would fail on it, and those are exactly the habits training should remove.
"""

import json
import re

from ftlab.task import FIELDS, date_in_words


def _refuse_duplicate_keys(pairs: list[tuple]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):  # {"name": "Bob", "name": "Zoë"}: json.loads would keep the last silently
        raise ValueError("duplicate key")
    return dict(pairs)


def parse_json_object(text: str) -> dict | None:
    """The output as a dict if it is exactly one JSON object (whitespace around it allowed), else None.

    An object that repeats a key is not valid here: which value a reader gets depends on the parser."""
    if not isinstance(text, str):
        return None
    try:  # raises on anything before or after the object, and (through the hook) on a repeated key
        value = json.loads(text.strip(), object_pairs_hook=_refuse_duplicate_keys)
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


# ---- The describe task (07_model_merging's second skill): a record -> one sentence -------------------
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
NOT_KNOWN = re.compile(r"\b(?:null|none|n/a|unknown|not (?:given|provided|specified|available|known))\b", re.IGNORECASE)


def stated(sentence: str, record: dict) -> list[str]:
    """The non-null fields the sentence states in the task's form: strings copied exactly, the age as its
    number (not counting the digits of the written-out date), the sign-up date as "March 5, 2021"."""
    written_date = date_in_words(record["signup_date"]) if record["signup_date"] else None
    right = []
    for field in FIELDS:
        value = record[field]
        if value is None:
            continue
        if field == "age":
            rest = sentence.replace(written_date, " ") if written_date else sentence
            right += [field] if re.search(rf"(?<!\d){value}(?!\d)", rest) else []
        else:
            right += [field] if (written_date if field == "signup_date" else value) in sentence else []
    return right


def invents(sentence: str, record: dict) -> bool:
    """Whether the sentence says what the record does not: a null spelled out ("unknown", "None"), another
    e-mail address, or a number that is neither the age nor the sign-up date's day and year."""
    if NOT_KNOWN.search(sentence):
        return True
    if any(address != record["email"] for address in EMAIL.findall(sentence)):
        return True
    rest = sentence
    for field in ("name", "city", "email"):  # digits inside these strings are theirs ("k.ito1987@...")
        if record[field]:
            rest = rest.replace(record[field], " ")
    allowed = {str(record["age"])} if record["age"] is not None else set()
    if record["signup_date"]:
        year, _, day = record["signup_date"].split("-")
        allowed |= {year, str(int(day))}
    return any(number not in allowed for number in re.findall(r"\d+", rest))


def describe_score(predictions: list[str], records: list[dict]) -> dict:
    """Rates in [0, 1] for the describe task. An answer is right ("exact_match") when it is one sentence
    (one line, ending in "."; not JSON), states every non-null field, and invents nothing. "fields" is, per
    field, the share of the records holding it whose sentence states it right."""
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions but {len(records)} records")
    if not records:
        raise ValueError("nothing to score")
    one_sentence = exact = invented = 0
    told, held = dict.fromkeys(FIELDS, 0), dict.fromkeys(FIELDS, 0)
    for text, record in zip(predictions, records, strict=True):
        text = text.strip()
        form = bool(text) and "\n" not in text and text.endswith(".") and not text.startswith(("{", "[", "`"))
        facts = [f for f in FIELDS if record[f] is not None]
        right = stated(text, record)
        made_up = invents(text, record)
        one_sentence += form
        invented += made_up
        exact += form and len(right) == len(facts) and not made_up
        for f in facts:
            held[f] += 1
            told[f] += f in right
    n = len(records)
    return {"n": n, "one_sentence": one_sentence / n, "exact_match": exact / n, "invented": invented / n,
            "fields": {f: told[f] / held[f] if held[f] else 0.0 for f in FIELDS}}


def answers_question(reply: str, accepted: list[str]) -> bool:
    """True if one accepted answer appears in the reply as a whole word, ignoring case ("Paris." counts)."""
    return any(re.search(rf"(?<!\w){re.escape(a.lower())}(?!\w)", reply.lower()) for a in accepted)


def probe_score(replies: list[str], questions: list[dict]) -> dict:
    """The forgetting probe: the share of general questions answered right (scored as in `answers_question`)."""
    if len(replies) != len(questions):
        raise ValueError(f"{len(replies)} replies but {len(questions)} questions")
    right = sum(answers_question(r, q["answers"]) for r, q in zip(replies, questions, strict=True))
    return {"n": len(questions), "correct": right / len(questions) if questions else 0.0}


def accuracy_by_kind(pairs: list[dict], rewards: list[tuple[float, float]]) -> dict:
    """A reward model's test: the share of preference pairs whose chosen answer scores above the rejected one,
    overall ("all") and per kind of mistake (each pair's `error`). `rewards` holds (chosen, rejected) per pair."""
    kinds = {}
    for pair, (chosen, rejected) in zip(pairs, rewards, strict=True):
        kinds.setdefault(pair["error"], []).append(chosen > rejected)
    result = {kind: sum(wins) / len(wins) for kind, wins in kinds.items()}
    return {"all": sum(map(sum, kinds.values())) / len(pairs), **result}


def format_scores(before: dict | None, after: dict) -> str:
    """A table of percentages: one row per measure, a before (optional) and after column per eval set ("-" where
    a measure is not the set's: a describe set has no "valid JSON").

    `before` and `after` map an eval set's name to its `score(...)`; a "probe" entry adds the last row."""
    sets = [name for name in after if name != "probe"]
    runs = [(name, label, scores[name]) for name in sets
            for label, scores in (("before", before), ("after", after)) if scores is not None]
    # extraction scores have "valid_json"; describe scores "one_sentence" and "invented" (a table may hold both)
    rows = [(label, lambda s, k=key: s.get(k)) for label, key in (
        ("valid JSON", "valid_json"), ("one sentence", "one_sentence"), ("exact match", "exact_match"),
        ("invented a fact", "invented")) if any(key in s for _, _, s in runs)]
    rows += [(field, lambda s, f=field: s["fields"][f]) for field in FIELDS]
    width, col = max(len(label) for label, _ in rows) + 2, 9 if before is not None else 13  # fits a set's name
    group = col * (2 if before is not None else 1)
    lines = [" " * width + "".join(f"{name:>{group}}" for name in sets),
             " " * width + "".join(f"{label:>{col}}" for _, label, _ in runs)]
    for label, get in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{'-':>{col}}" if get(s) is None else f"{100 * get(s):>{col - 1}.1f}%"
                                                   for _, _, s in runs))
    lines.append(f"{'n':<{width}}" + "".join(f"{s['n']:>{col}}" for _, _, s in runs))
    if "probe" in after:
        shown = [s["probe"] for s in (before, after) if s is not None and "probe" in s]
        lines.append(f"general questions answered right (forgetting probe, n={after['probe']['n']}): "
                     + " -> ".join(f"{100 * p['correct']:.0f}%" for p in shown))
    return "\n".join(lines)
