"""Write the task's data: texts about made-up people, and the JSON each one should become.

Why synthetic: we know the right answer for every line, because each text is written *from* a person
record, and the target JSON comes from that record (and from how the text chose to spell it: a city
without its accents, a chat typed in lowercase), never parsed back out of the text.

Why it is built this way: an earlier version used ~30 fixed templates and short name/city lists. A model
trained on it learned those templates, and answered null whenever a text did not look like one (a plain
"Contact: <name> <email>, <city>." lost its city and e-mail). So this version teaches the skill:
  * vocabulary far beyond a list: names from 28 naming traditions (middle names, initials, particles,
    hyphens, double surnames, family-name-first), ~500 cities and towns, e-mails built the ways people build them;
  * shapes are composed, not templated: a FRAME (inbox e-mail, chat, CRM note, form dump, CSV row, table,
    log line, signature, contact card...) filled with one of many PHRASINGS per field, in random order;
  * every field but the name is missing ~25% of the time in every frame alike, so null is never a safe guess;
  * half the texts carry distractors: other people's ages, cities and e-mails, office and visited cities,
    other dates, phone and order numbers, titles before names;
  * the eval split has its own names, and cities, frames and phrasings that train never shows.

Where it lives. The vocabulary (names, cities, e-mail parts, jobs, relatives, phrasings, frame, prose and
describe lines) is in data/vocab/*.json, one file per kind, each saying what it holds. The logic that writes
a text is the package data/generator/, one module per piece, each opening with what it holds, in the order
they build on each other:
    generator/settings.py     the numbers: how often a field is missing, how many distractors, TODAY
    generator/vocab.py        vocab(): reads a file of data/vocab/
    generator/spelling.py     how a date, an age, an e-mail is written in a text, and read back
    generator/people.py       the pools, their train/eval split, and make_person (one person record)
    generator/distractors.py  true facts about something else that a text may carry
    generator/draft.py        the phrasings, and Draft: one text being written from one person
    generator/frames.py       the kinds of text (e-mail, chat, form, CSV...), each writing a whole text
    generator/prose.py        plain paragraphs for continued pre-training (01_full_finetuning)
    generator/describe.py     the second task's sentence (07_model_merging)
This file, top to bottom, puts them together: it renders one example and checks it (every gold value must be
readable in its text), makes the wrong answers of the preference pairs, and builds and writes the eight splits.

    python3 data/generate.py              # rewrites data/*.jsonl; same seed -> same bytes
    python3 data/generate.py --seed 1 --out /tmp/data
"""

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

# The generator package sits beside this file. Python puts a script's own folder on sys.path only when it is
# run, not when a test loads this file from its path, so put it there in both cases.
sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":  # run as a script: make the ftlab package (one folder up) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Some of these names are here only for tests/test_data.py, which loads this file as `gen` and reads them as
# gen.<name>: ALL_CITIES, DATE_FORMATS, DESCRIBE, DISTRACTOR_KINDS, NAMES, SAY, VOCAB_READ, ascii_fold, fields_of
# and held_out (hence the noqa: F401 on their lines).
from generator.describe import DESCRIBE, describe  # noqa: F401
from generator.distractors import DISTRACTOR_KINDS  # noqa: F401
from generator.draft import SAY, Draft, fields_of  # noqa: F401
from generator.frames import FRAMES, pick_frame
from generator.people import ALL_CITIES, CITY_POOL, NAMES, held_out, make_email, make_person  # noqa: F401
from generator.prose import make_prose
from generator.settings import FIRST_SIGNUP, LAST_SIGNUP
from generator.spelling import DATE_FORMATS, ascii_fold, random_date, read_age, read_date, read_email  # noqa: F401
from generator.vocab import VOCAB_READ  # noqa: F401

from ftlab.data import ERROR_KINDS, as_sft
from ftlab.metrics import score
from ftlab.task import FIELDS, describe_messages, prompt_messages

DEFAULT_SIZES = {"sft_train": 2000, "sft_eval": 100, "preference": 400, "rl_prompts": 300,
                 "prose_train": 3000, "prose_eval": 200, "describe_train": 2000, "describe_eval": 100}

# ====================================================================================================
# 1. Render one example, and check it: every gold value must be readable in the text.
# ====================================================================================================
@dataclass
class Example:
    text: str
    target: dict
    info: dict  # how the text was made: frame, phrasings, date format, distractors (tests read this)


def render(rng, split: str) -> Example:
    d = Draft(rng, split, make_person(rng, split))
    name = pick_frame(rng, split)
    writer, family, _ = FRAMES[name]
    d.info.update(frame=name, family=family)
    text = writer(d)
    assert not d.pending, (name, "left a distractor unplaced")
    p = d.p
    target = dict(zip(FIELDS, (p.name, p.age, d.city if p.city else None, p.email,
                               p.signup.isoformat() if p.signup else None), strict=True))
    shown = d.shown
    if p.email and ("email", d.surface["email"]) not in shown:  # only the plain address made it into the text
        d.info.update(email_form="plain", email_text=p.email)
    if d.lower:  # typed in lowercase: the name and the city are golden as written
        text, shown = text.lower(), [(f, s.lower()) for f, s in shown]
        target.update(name=p.name.lower(), city=target["city"] and target["city"].lower())
        d.info.update(date_text=d.info["date_text"] and d.info["date_text"].lower(),
                      email_text=d.info["email_text"] and d.info["email_text"].lower())
        d.info["steal"] = {k: v.lower() if isinstance(v, str) and k != "signup_date" else v
                           for k, v in d.info["steal"].items()}
    d.info["steal"] = {k: v for k, v in d.info["steal"].items() if v != target[k]}
    d.info["lowercase"] = d.lower
    read_back = {"name": lambda s: s.endswith(target["name"]), "age": lambda s: read_age(s) == target["age"],
                 "city": lambda s: s.startswith(target["city"]), "email": lambda s: read_email(s) == target["email"],
                 "signup_date": lambda s: read_date(s).isoformat() == target["signup_date"]}
    for f in FIELDS:
        surfaces = [s for g, s in shown if g == f]
        assert (target[f] is None) == (not surfaces), (name, f, text)
        for s in surfaces:
            assert s in text and read_back[f](s), (name, f, s, target[f], text)
    for f in ("name", "city"):
        assert target[f] is None or target[f] in text, (name, f, text)
    return Example(text, target, d.info)


def make_examples(rng, split: str, n: int, avoid: set = frozenset()) -> list[Example]:
    """n examples with distinct texts, none of which is in `avoid`."""
    examples, seen = [], set(avoid)
    while len(examples) < n:
        ex = render(rng, split)
        if ex.text not in seen:
            seen.add(ex.text)
            examples.append(ex)
    return examples


def dumps(target: dict) -> str:
    return json.dumps(target, ensure_ascii=False)


# ====================================================================================================
# 2. Wrong answers for preference pairs: each is a mistake a base model really makes.
# ====================================================================================================
def can_make(kind: str, ex: Example) -> bool:
    t = ex.target
    if kind == "wrong_type":
        return t["age"] is not None
    if kind == "unnormalised_date":
        return t["signup_date"] is not None and ex.info["date_text"] != t["signup_date"]
    if kind == "hallucinated_value":
        return bool(ex.info["steal"]) or None in t.values()
    return True


def make_rejected(rng, kind: str, ex: Example) -> str:
    t, wrong = ex.target, dict(ex.target)
    if kind == "prose":
        return rng.choice(["Sure! Here is the JSON:\n{}", "Here's the extracted information: {}",
                           "{}\n\nLet me know if you need anything else!",
                           "Based on the text, the person's details are:\n\n{}"]).format(dumps(t))
    if kind == "markdown_fence":
        return rng.choice(["```json\n{}\n```", "```\n{}\n```"]).format(dumps(t))
    if kind == "yaml":
        return "\n".join(f"{k}: {'null' if v is None else v}" for k, v in t.items())
    if kind == "missing_key":  # models most often drop the keys they have nothing for
        nulls = [k for k in FIELDS if t[k] is None]
        del wrong[rng.choice(nulls or list(FIELDS[1:]))]
    elif kind == "wrong_type":
        wrong["age"] = str(t["age"])
    elif kind == "unnormalised_date":
        wrong["signup_date"] = ex.info["date_text"]
    elif kind == "hallucinated_value":
        if ex.info["steal"]:  # a distractor's value taken for the person's
            f = rng.choice(sorted(ex.info["steal"]))
            wrong[f] = ex.info["steal"][f]
        else:  # a null filled in with something plausible
            f = rng.choice([k for k in FIELDS if t[k] is None])
            first, last = t["name"].split()[0], t["name"].split()[-1]
            wrong[f] = {"age": rng.randint(25, 45), "city": rng.choice(CITY_POOL["train"]).name,
                        "email": make_email(rng, first, last),
                        "signup_date": random_date(rng, FIRST_SIGNUP, LAST_SIGNUP).isoformat()}[f]
    return dumps(wrong)


def make_preference(rng, n: int, avoid: set) -> list[Example]:
    examples, seen = [], set(avoid)
    while len(examples) < n:
        kind = ERROR_KINDS[len(examples) % len(ERROR_KINDS)]
        ex = make_examples(rng, "train", 1, seen)[0]
        if not can_make(kind, ex):
            continue
        rejected = make_rejected(rng, kind, ex)
        assert rejected != dumps(ex.target) and score([rejected], [ex.target])["exact_match"] == 0, (kind, rejected)
        ex.info.update(error=kind, rejected=rejected)
        seen.add(ex.text)
        examples.append(ex)
    return examples


# ====================================================================================================
# 3. The eight splits, and the JSON line each example becomes.
# ====================================================================================================
def make_describe(rng, examples: list[Example], n: int) -> list[Example]:
    """The first n extraction examples' records, each as a describe example: its JSON in, one sentence out."""
    return [Example(text=dumps(ex.target), target=ex.target, info={"sentence": describe(rng, ex.target)})
            for ex in examples[:n]]


def build(seed: int = 0, sizes: dict | None = None) -> dict[str, list[Example]]:
    """All eight splits. Each has its own random stream, so resizing one split leaves the others alone."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}

    def stream(name):
        return random.Random(f"{seed}:{name}")  # a str seed is hashed with sha512: stable across runs

    train = make_examples(stream("sft_train"), "train", sizes["sft_train"])
    train_texts = {ex.text for ex in train}
    built = {
        "sft_train": train,
        "sft_eval": make_examples(stream("sft_eval"), "eval", sizes["sft_eval"]),
        "preference": make_preference(stream("preference"), sizes["preference"], train_texts),
        "rl_prompts": make_examples(stream("rl_prompts"), "train", sizes["rl_prompts"], train_texts),
    }
    prose_rng = stream("prose_train")
    built["prose_train"] = [make_prose(prose_rng, "train") for _ in range(sizes["prose_train"])]
    prose_rng = stream("prose_eval")
    built["prose_eval"] = [make_prose(prose_rng, "eval") for _ in range(sizes["prose_eval"])]
    built["describe_train"] = make_describe(stream("describe_train"), train, sizes["describe_train"])
    built["describe_eval"] = make_describe(stream("describe_eval"), built["sft_eval"], sizes["describe_eval"])
    assert not train_texts & {ex.text for ex in built["sft_eval"]}, "eval shares a text with train"
    assert not train_texts & {ex.text for ex in built["rl_prompts"]}, "an RL prompt copies a train text"
    return built


def to_record(split: str, ex: Example | str) -> dict:
    """The JSON line for one example, in the format TRL reads for that kind of training."""
    if split.startswith("prose"):
        return {"text": ex}  # plain text: what causal-LM (continued pre-training) datasets hold
    if split.startswith("describe"):
        return {"messages": describe_messages(ex.text) + [{"role": "assistant", "content": ex.info["sentence"]}]}
    answer = {"role": "assistant", "content": dumps(ex.target)}
    if split in ("sft_train", "sft_eval"):
        return as_sft(ex.text, ex.target)  # the same form ftlab.data gives the hand-written eval set
    if split == "preference":
        return {"prompt": prompt_messages(ex.text), "chosen": [answer],
                "rejected": [{"role": "assistant", "content": ex.info["rejected"]}], "error": ex.info["error"]}
    return {"prompt": prompt_messages(ex.text), "answer": dumps(ex.target)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    for flag, split in (("--train", "sft_train"), ("--eval", "sft_eval"), ("--preference", "preference"),
                        ("--rl", "rl_prompts"),
                        ("--prose", "prose_train"), ("--prose-eval", "prose_eval"),
                        ("--describe", "describe_train"), ("--describe-eval", "describe_eval")):
        parser.add_argument(flag, type=int, default=DEFAULT_SIZES[split], dest=split,
                            help=f"lines in {split}.jsonl (default {DEFAULT_SIZES[split]})")
    args = parser.parse_args(argv)
    built = build(args.seed, {split: getattr(args, split) for split in DEFAULT_SIZES})
    args.out.mkdir(parents=True, exist_ok=True)
    for split, examples in built.items():
        path = args.out / f"{split}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(to_record(split, ex), ensure_ascii=False) + "\n" for ex in examples)
        print(f"{len(examples):4d} lines -> {path}")


if __name__ == "__main__":
    main()
