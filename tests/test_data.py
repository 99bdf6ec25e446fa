"""The data is the lesson: these tests keep it reproducible, valid, varied, and the eval split honest."""

import importlib.util
import json
import re
from collections import Counter

import pytest

from ftlab.data import (
    DATA_DIR,
    ERROR_KINDS,
    DataError,
    gold_of,
    load_split,
    read_jsonl,
    to_prompt_completion,
)
from ftlab.metrics import score
from ftlab.task import FIELDS, prompt_messages

SPLITS = ["sft_train", "sft_eval", "preference", "rl_prompts"]
SMALL = ["--train", "40", "--eval", "10", "--preference", "14", "--rl", "10"]


def load_generator():
    """data/generate.py is a script, not a package module, so load it from its path."""
    spec = importlib.util.spec_from_file_location("generate", DATA_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()


@pytest.fixture(scope="module")
def built():
    """What the committed files were made from (test_committed_files_match proves they are the same)."""
    return gen.build(seed=0)


def file_bytes(folder):
    return {split: (folder / f"{split}.jsonl").read_bytes() for split in SPLITS}


# --- Reproducible.
def test_same_seed_gives_identical_bytes(tmp_path, capsys):
    gen.main(["--seed", "3", "--out", str(tmp_path / "a"), *SMALL])
    gen.main(["--seed", "3", "--out", str(tmp_path / "b"), *SMALL])
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")


def test_different_seed_gives_different_data(tmp_path, capsys):
    gen.main(["--seed", "3", "--out", str(tmp_path / "a"), *SMALL])
    gen.main(["--seed", "4", "--out", str(tmp_path / "b"), *SMALL])
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert all(a[split] != b[split] for split in SPLITS)


def test_committed_files_match_a_fresh_generation(tmp_path, capsys):
    gen.main(["--out", str(tmp_path)])
    fresh, committed = file_bytes(tmp_path), file_bytes(DATA_DIR)
    for split in SPLITS:
        assert committed[split] == fresh[split], \
            f"data/{split}.jsonl is stale or hand-edited: run python3 data/generate.py"


# --- Valid.
@pytest.mark.parametrize("split", SPLITS)
def test_committed_records_validate_and_have_default_counts(split):
    records = load_split(split)
    assert len(records) == gen.DEFAULT_SIZES[split]
    for record in records:
        gold = gold_of(record)
        assert list(gold) == list(FIELDS)


def test_prompt_completion_splits_off_the_answer():
    record = load_split("sft_eval")[0]
    pc = to_prompt_completion(record)
    assert pc["prompt"] == record["messages"][:2] and pc["completion"] == record["messages"][2:]
    assert [m["role"] for m in pc["completion"]] == ["assistant"]


def test_preference_rejected_is_never_an_exact_match():
    records = load_split("preference")
    assert Counter(r["error"] for r in records).keys() == set(ERROR_KINDS)
    for r in records:
        result = score([r["rejected"][0]["content"]], [gold_of(r)])
        assert result["exact_match"] == 0, r
        assert score([r["chosen"][0]["content"]], [gold_of(r)])["exact_match"] == 1


# --- Honest eval.
def user_texts(split):
    records = load_split(split)
    return [(r.get("messages") or r["prompt"])[1]["content"] for r in records]


def test_eval_names_and_templates_are_disjoint_from_train():
    train_pool, eval_pool = gen.NAMES["train"], gen.NAMES["eval"]
    for part in ("female", "male", "last"):
        assert not set(train_pool[part]) & set(eval_pool[part])
    assert not {t.id for t in gen.TEMPLATES["train"]} & {t.id for t in gen.TEMPLATES["eval"]}
    assert not {t.text for t in gen.TEMPLATES["train"]} & {t.text for t in gen.TEMPLATES["eval"]}
    train_text = "\n".join(user_texts("sft_train") + user_texts("preference") + user_texts("rl_prompts"))
    eval_names = eval_pool["female"] + eval_pool["male"] + eval_pool["last"]
    leaked = [name for name in eval_names if re.search(rf"\b{re.escape(name)}\b", train_text)]
    assert not leaked


def test_no_user_text_is_shared_between_splits():
    train = set(user_texts("sft_train"))
    assert len(train) == len(user_texts("sft_train"))
    for split in ("sft_eval", "preference", "rl_prompts"):
        assert not train & set(user_texts(split)), split


# --- Varied.
def test_train_uses_many_templates_and_every_date_format(built):
    train = built["sft_train"]
    assert len({ex.info["template"] for ex in train}) >= 20
    assert {ex.info["date_format"] for ex in train} - {None} == set(gen.DATE_FORMATS)
    assert len({ex.info["template"] for ex in built["sft_eval"]}) >= 8


def test_numeric_day_month_dates_are_unambiguous(built):
    for ex in built["sft_train"] + built["sft_eval"]:
        if ex.info["date_format"] in ("dotted_dmy", "slashed_mdy"):
            assert int(ex.target["signup_date"][-2:]) > 12


def test_each_field_is_missing_often_but_not_mostly():
    golds = [gold_of(r) for r in load_split("sft_train")]
    for field in FIELDS[1:]:
        rate = sum(g[field] is None for g in golds) / len(golds)
        assert 0.15 <= rate <= 0.5, (field, rate)
    assert all(g["name"] for g in golds)
    assert any(all(g[f] is None for f in FIELDS[1:]) for g in golds), "no name-only example"


def test_names_and_ages_come_in_many_forms(built):
    golds = [gold_of(r) for r in load_split("sft_train")]
    names = {g["name"] for g in golds}
    assert any(not n.isascii() for n in names)
    assert any(re.search(r" [A-Z]\. ", n) for n in names), "no middle initials"
    texts = [ex.text for ex in built["sft_train"]]
    assert sum(bool(re.search(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty)-\w+", t)) for t in texts) >= 20
    ages = [g["age"] for g in golds if g["age"] is not None]
    assert min(ages) >= 18 and max(ages) <= 90


def test_most_texts_carry_a_distractor(built):
    train = built["sft_train"]
    with_distractor = [ex for ex in train if ex.info["distractors"]]
    assert len(with_distractor) / len(train) >= 0.3
    kinds = Counter(kind for ex in train for kind in ex.info["distractors"])
    assert set(kinds) == set(gen.DISTRACTOR_KINDS)


def test_one_regex_does_not_solve_it(built):
    """The first standalone two-digit number is often not the age; the first e-mail is not always theirs."""
    age_hits = age_total = email_misses = 0
    for ex in built["sft_train"]:
        first_number = re.search(r"(?<![\d.#/+-])\b(\d{2})\b(?![\d./-])", ex.text)
        if ex.target["age"] is not None:
            age_total += 1
            age_hits += bool(first_number) and int(first_number.group(1)) == ex.target["age"]
        first_email = re.search(r"[\w.+-]+@[\w-]+\.[\w.]+\w", ex.text)
        email_misses += bool(first_email) and first_email.group(0) != ex.target["email"]
    assert age_hits / age_total < 0.85
    assert email_misses >= 20


# --- read_jsonl refuses bad lines, saying where and what.
def sft_line(**target_changes):
    target = {"name": "Ana Silva", "age": 30, "city": "Lisbon", "email": None, "signup_date": "2024-03-05"}
    target.update(target_changes)
    answer = {"role": "assistant", "content": json.dumps(target)}
    return json.dumps({"messages": prompt_messages("Ana Silva, 30, Lisbon, since 5 March 2024") + [answer]})


def with_content(content):
    record = json.loads(sft_line())
    record["messages"][-1]["content"] = content
    return json.dumps(record)


def with_last_role(role):
    record = json.loads(sft_line())
    record["messages"][-1]["role"] = role
    return json.dumps(record)


def without_answer():
    record = json.loads(sft_line())
    record["messages"].pop()
    return json.dumps(record)


GOOD = sft_line()
BAD_LINES = {
    "invalid JSON": '{"messages": [',
    'missing key "messages"': json.dumps({"msgs": []}),
    "not the assistant": with_last_role("user"),
    "last message is from 'user'": without_answer(),
    "not valid JSON": with_content("Sure! The name is Ana Silva."),
    "in this order": with_content(json.dumps({"age": 30, "name": "Ana Silva", "city": "Lisbon", "email": None,
                                              "signup_date": "2024-03-05"})),
    "age must be an integer": sft_line(age=True),
    "2024-02-30": sft_line(signup_date="2024-02-30"),
    "YYYY-MM-DD": sft_line(signup_date="March 5, 2024"),
    "empty line": "",
}


@pytest.mark.parametrize("problem", BAD_LINES)
def test_bad_line_is_reported_with_path_and_line_number(tmp_path, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(GOOD + "\n" + BAD_LINES[problem] + "\n" + GOOD + "\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_jsonl(path, "sft")
    message = str(error.value)
    assert message.startswith(f"{path}:2: ") and problem in message and "\n" not in message


def test_good_file_reads_with_or_without_final_newline(tmp_path):
    path = tmp_path / "good.jsonl"
    path.write_text(GOOD + "\n" + GOOD, encoding="utf-8")
    assert len(read_jsonl(path, "sft")) == 2
    path.write_text(GOOD + "\n" + GOOD + "\n", encoding="utf-8")
    assert len(read_jsonl(path, "sft")) == 2


def test_rl_and_preference_records_are_checked_too(tmp_path):
    record = load_split("preference")[0]
    record["rejected"] = record["chosen"]
    path = tmp_path / "pref.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: rejected is the same as chosen"):
        read_jsonl(path, "preference")
    rl = load_split("rl_prompts")[0]
    rl["answer"] = json.dumps({k: v for k, v in json.loads(rl["answer"]).items() if k != "email"})
    path.write_text(json.dumps(rl) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: target keys must be exactly"):
        read_jsonl(path, "rl")
