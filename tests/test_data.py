"""The data is the lesson: these tests keep it reproducible, valid, varied, and the eval split honest."""

import importlib.util
import json
import re
import subprocess
import sys
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

SPLITS = ["sft_train", "sft_eval", "preference", "rl_prompts", "prose_train", "prose_eval", "describe_train",
          "describe_eval"]
SMALL = ["--train", "40", "--eval", "10", "--preference", "14", "--rl", "10", "--prose", "20", "--prose-eval", "5",
         "--describe", "40", "--describe-eval", "10"]


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


def test_runs_as_a_script_from_any_folder(tmp_path, capsys):
    """`python3 data/generate.py`, run from another folder, finds its package (data/generator/) and ftlab by
    itself, and writes what the loaded module writes."""
    subprocess.run([sys.executable, str(DATA_DIR / "generate.py"), "--seed", "3", "--out", str(tmp_path / "a"),
                    *SMALL], cwd=tmp_path, check=True, capture_output=True)
    gen.main(["--seed", "3", "--out", str(tmp_path / "b"), *SMALL])
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")


def test_different_seed_gives_different_data(tmp_path, capsys):
    gen.main(["--seed", "3", "--out", str(tmp_path / "a"), *SMALL])
    gen.main(["--seed", "4", "--out", str(tmp_path / "b"), *SMALL])
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert all(a[split] != b[split] for split in SPLITS)


def test_committed_files_match_a_fresh_generation(tmp_path, capsys):
    gen.main(["--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{split}.jsonl" for split in SPLITS)
    fresh, committed = file_bytes(tmp_path), file_bytes(DATA_DIR)
    for split in SPLITS:
        assert committed[split] == fresh[split], \
            f"data/{split}.jsonl is stale or hand-edited: run python3 data/generate.py"


def test_every_vocab_file_is_read():
    """The generator's tables live in data/vocab/*.json: none may lie there unread (and vocab() refuses a file
    holding a table the generator does not read)."""
    on_disk = sorted(path.stem for path in (DATA_DIR / "vocab").glob("*.json"))
    assert on_disk and sorted(gen.VOCAB_READ) == on_disk


# --- Valid.
@pytest.mark.parametrize("split", SPLITS)
def test_committed_records_validate_and_have_default_counts(split):
    records = load_split(split)
    assert len(records) == gen.DEFAULT_SIZES[split]
    if split.startswith("prose"):
        return  # plain text: no answer to check
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


def test_eval_names_are_disjoint_from_train_and_never_leak():
    def pool(split):
        return {x for parts in gen.NAMES[split].values() for names in parts.values() for x in names}
    assert not pool("train") & pool("eval")  # across every culture and part
    train_text = "\n".join(user_texts("sft_train") + user_texts("preference") + user_texts("rl_prompts"))
    eval_names = pool("eval")
    assert len(eval_names) >= 300
    leaked = [name for name in eval_names if re.search(rf"\b{re.escape(name)}\b", train_text)]
    assert not leaked


def test_eval_has_frames_phrasings_and_cities_that_train_never_sees(built):
    train, evals = built["sft_train"] + built["preference"] + built["rl_prompts"], built["sft_eval"]
    held_frames = {name for name, (_, _, weight) in gen.FRAMES.items() if weight == 0}
    assert len(held_frames) >= 3
    assert not {ex.info["frame"] for ex in train} & held_frames
    assert sum(ex.info["frame"] in held_frames for ex in evals) >= 20
    assert not any(gen.held_out(p) for ex in train for p in ex.info["phrasings"]), "train used a held-out phrasing"
    assert sum(any(gen.held_out(p) for p in ex.info["phrasings"]) for ex in evals) >= 30
    held_cities = {c.name for c in gen.CITY_POOL["eval_only"]}
    held_cities |= {gen.ascii_fold(c) for c in held_cities}
    assert len(gen.CITY_POOL["eval_only"]) >= 50 and not held_cities & {c.name for c in gen.CITY_POOL["train"]}
    assert not {ex.target["city"] for ex in train} & held_cities
    assert sum(ex.target["city"] in held_cities for ex in evals) >= 15


def test_no_user_text_is_shared_between_splits():
    train = set(user_texts("sft_train"))
    assert len(train) == len(user_texts("sft_train"))
    for split in ("sft_eval", "preference", "rl_prompts"):
        assert not train & set(user_texts(split)), split


# --- Varied.
def test_train_uses_many_frames_phrasings_and_every_date_format(built):
    train = built["sft_train"]
    assert len({ex.info["frame"] for ex in train}) >= 14
    assert len({p for ex in train for p in ex.info["phrasings"]}) >= 300  # distinct phrasings, labels, questions
    assert len({(ex.info["frame"], p) for ex in train for p in ex.info["phrasings"]}) >= 1000
    assert {ex.info["date_format"] for ex in train} - {None} == set(gen.DATE_FORMATS)
    assert len({ex.info["frame"] for ex in built["sft_eval"]}) >= 12


def test_each_field_has_many_phrasings_in_each_voice():
    for voice in ("i", "they"):
        for field in FIELDS:
            seen = [s for s in gen.SAY[voice] if field in gen.fields_of(s) and not gen.held_out(s)]
            assert len(seen) >= 20, (voice, field, len(seen))


def test_numeric_day_month_dates_are_unambiguous(built):
    """Slashed day/month dates only when the day is over 12; dots always mean day.month.year."""
    for ex in built["sft_train"] + built["sft_eval"]:
        if ex.info["date_format"] in ("slashed_dmy", "slashed_mdy"):
            assert int(ex.target["signup_date"][-2:]) > 12
    assert any(ex.info["date_format"] == "dotted_dmy" and int(ex.target["signup_date"][-2:]) <= 12
               for ex in built["sft_train"])


@pytest.mark.parametrize("written, iso", [
    ("Jan. 5, 2021", "2021-01-05"), ("5-Mar-2021", "2021-03-05"), ("05 Mar 2021", "2021-03-05"),
    ("March 5th 2021", "2021-03-05"), ("the 5th of March, 2021", "2021-03-05"), ("25/01/2022", "2022-01-25"),
    ("01/25/2022", "2022-01-25"), ("05.03.2021", "2021-03-05"), ("2021/03/05", "2021-03-05"),
    ("Fri 5 March 2021", "2021-03-05"), ("Sept. 9, 2020", "2020-09-09")])
def test_written_dates_read_back(written, iso):
    assert gen.read_date(written).isoformat() == iso


@pytest.mark.parametrize("written", ["ana dot ruiz at gmail dot com", "ana.ruiz [at] gmail.com",
                                     "ana.ruiz(at)gmail.com", "ana.ruiz (at) gmail (dot) com",
                                     "ana.ruiz AT gmail DOT com", "mailto:ana.ruiz@gmail.com", "<ana.ruiz@gmail.com>"])
def test_written_emails_read_back(written):
    assert gen.read_email(written) == "ana.ruiz@gmail.com"


def test_obfuscated_emails_normalise(built):
    train = built["sft_train"]
    obfuscated = [ex for ex in train if ex.info["email_form"] == "obfuscated"]
    assert 0.04 <= len(obfuscated) / len(train) <= 0.12
    for ex in obfuscated:
        assert ex.info["email_text"] in ex.text and "@" not in ex.info["email_text"]
        assert gen.read_email(ex.info["email_text"]) == ex.target["email"]
    assert {ex.info["email_form"] for ex in train} == {None, "plain", "obfuscated", "mailto", "angle"}


def test_each_field_is_missing_often_but_not_mostly():
    golds = [gold_of(r) for r in load_split("sft_train")]
    for field in FIELDS[1:]:
        rate = sum(g[field] is None for g in golds) / len(golds)
        assert 0.15 <= rate <= 0.35, (field, rate)
    assert all(g["name"] for g in golds)
    assert any(all(g[f] is None for f in FIELDS[1:]) for g in golds), "no name-only example"


def test_null_is_not_a_safe_guess_in_any_frame_family(built):
    """An unusual frame holds its fields as often as a plain one, so 'odd shape -> null' never pays."""
    train = built["sft_train"]
    for family in {ex.info["family"] for ex in train}:
        group = [ex for ex in train if ex.info["family"] == family]
        assert len(group) >= 150, family
        for field in FIELDS[1:]:
            rate = sum(ex.target[field] is None for ex in group) / len(group)
            assert 0.15 <= rate <= 0.35, (family, field, rate)


def test_names_cities_and_ages_come_in_many_forms(built):
    golds = [gold_of(r) for r in load_split("sft_train")]
    names = {g["name"] for g in golds}
    assert len(names) >= 1900
    assert any(not n.isascii() for n in names)
    assert any(re.search(r" [A-Z]\. ", n) for n in names), "no middle initials"
    assert sum(bool(re.search(r"\w-[A-Z]", n)) for n in names) >= 20, "no double-barrelled names"
    particles = r"\b(de|del|van|von|bin|binti|bint|dos|da|du|Le|Di|De|Dela|Te)\b"
    assert sum(bool(re.search(particles, n)) for n in names) >= 30, "no multi-part surnames"
    assert sum(n == n.lower() for n in names) >= 30, "no lowercase chats"
    cities = [g["city"] for g in golds if g["city"]]
    assert len(set(cities)) >= 300
    accented = {c.name for c in gen.ALL_CITIES if not c.name.isascii()}
    assert sum(c in {gen.ascii_fold(a) for a in accented} for c in cities) >= 20, "no cities written without accents"
    texts = [ex.text for ex in built["sft_train"]]
    assert sum(bool(re.search(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty)-\w+", t)) for t in texts) >= 20
    assert sum(bool(re.search(r"\w, (TX|CA|NY|ON|NSW|Portugal|Germany|Japan)\b", t)) for t in texts) >= 20
    ages = [g["age"] for g in golds if g["age"] is not None]
    assert min(ages) >= 18 and max(ages) <= 90
    titled = [ex for ex in built["sft_train"] if "title" in ex.info["distractors"]]
    assert len(titled) >= 100 and not any(re.match(r"(Mr|Ms|Mrs|Dr|Prof)\b", ex.target["name"]) for ex in titled)


def test_most_texts_carry_a_distractor(built):
    train = built["sft_train"]
    with_distractor = [ex for ex in train if ex.info["distractors"]]
    assert 0.45 <= len(with_distractor) / len(train) <= 0.75
    kinds = Counter(kind for ex in train for kind in ex.info["distractors"])
    assert set(kinds) == set(gen.DISTRACTOR_KINDS)
    for field in FIELDS:  # a distractor and the real value of the same field, in one text
        both = [ex for ex in train if field in ex.info["steal"] and ex.target[field] is not None]
        assert len(both) >= 40, field


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


# --- The hand-written files: read and validated like the generated ones, never generated.
def test_handwritten_eval_comes_back_in_sft_form_with_the_current_prompt():
    records = load_split("handwritten_eval")
    assert len(records) >= 60
    for record in records:
        assert record["messages"][:2] == prompt_messages(record["messages"][1]["content"])
        assert list(gold_of(record)) == list(FIELDS)
    generated = {r["messages"][1]["content"] for split in ("sft_train", "sft_eval") for r in load_split(split)}
    assert not generated & {r["messages"][1]["content"] for r in records}


def test_general_probe_questions():
    questions = load_split("general_probe")
    assert len(questions) >= 20
    assert all(q["answers"] and q["question"].endswith("?") for q in questions)


@pytest.mark.parametrize("line, problem", [
    ('{"text": "Ana, 30", "answer": {"name": "Ana", "age": "30", "city": null, "email": null, "signup_date": null}}',
     "age must be an integer"),
    ('{"text": "", "answer": {"name": "Ana", "age": 30, "city": null, "email": null, "signup_date": null}}',
     "text must be"),
    ('{"text": "Ana", "answer": "Ana"}', "answer must be a JSON object"),
])
def test_bad_handwritten_lines_are_refused(tmp_path, line, problem):
    path = tmp_path / "hand.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=problem):
        read_jsonl(path, "handwritten")


def test_bad_probe_line_is_refused(tmp_path):
    path = tmp_path / "probe.jsonl"
    path.write_text('{"question": "2+2?", "answers": []}\n')
    with pytest.raises(DataError, match=r"probe.jsonl:1: answers must be"):
        read_jsonl(path, "probe")


@pytest.mark.parametrize("content, problem", [("", "is empty"), ("\n", "is empty"), (b"\xff\xfe", "cannot read")])
def test_empty_or_unreadable_files_are_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "train.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=problem):
        read_jsonl(path, "sft")


def test_a_missing_file_or_a_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "absent.jsonl", "sft")
    with pytest.raises(DataError, match="cannot read"):
        read_jsonl(tmp_path, "sft")


# --- The prose for continued pre-training (01_full_finetuning).
def test_prose_is_plain_text_about_the_task_world_with_eval_people_of_its_own(built):
    """No prompt, no JSON, no chat markup; each paragraph names a person; eval's people are not train's, and
    eval's paragraphs use held-out cities train never shows (so held-out perplexity is not memorisation)."""
    train, held = built["prose_train"], built["prose_eval"]
    assert all(text and "{" not in text and "<|" not in text and "system" not in text for text in train + held)
    assert not set(train) & set(held)
    eval_only = {c.name for c in gen.CITY_POOL["eval_only"]}
    assert not any(city in text for text in train for city in eval_only if len(city) > 6)
    assert sum(any(city in text for city in eval_only) for text in held) > len(held) // 4
    emails = sum("@" in text for text in train)
    assert 0.3 * len(train) < emails < len(train)  # e-mail addresses in some paragraphs, not all


# --- The second task (describe): the same people's records, each sentence right by its own metric.
@pytest.mark.parametrize("task_split", [("describe_train", "sft_train"), ("describe_eval", "sft_eval")])
def test_describe_records_are_the_extraction_golds_of_the_same_people(task_split):
    describe, extract = task_split
    records = [gold_of(r) for r in load_split(describe)]
    assert records == [gold_of(r) for r in load_split(extract)][: len(records)]


def test_every_reference_sentence_scores_right_and_they_vary():
    from ftlab.metrics import describe_score

    rows = load_split("describe_train")
    sentences = [r["messages"][-1]["content"] for r in rows]
    result = describe_score(sentences, [gold_of(r) for r in rows])
    assert result["exact_match"] == 1 and result["invented"] == 0
    assert len(set(sentences)) == len(sentences)
    # the facts are said in several ways: no one way of stating the e-mail covers most sentences
    ways = Counter(next(c for c in gen.DESCRIBE["email"] if c.split(" {")[0] in s)
                   for s, r in zip(sentences, rows, strict=True) if gold_of(r)["email"])
    assert len(ways) == len(gen.DESCRIBE["email"]) and max(ways.values()) < 0.35 * sum(ways.values())


def test_a_describe_line_with_the_wrong_prompt_or_two_lines_is_refused(tmp_path):
    row = load_split("describe_eval")[0]
    bad_prompt = json.loads(json.dumps(row))
    bad_prompt["messages"][0]["content"] = prompt_messages("x")[0]["content"]
    two_lines = json.loads(json.dumps(row))
    two_lines["messages"][2]["content"] = "Ana is 30.\nShe lives in Porto."
    for bad, message in ((bad_prompt, "DESCRIBE_PROMPT"), (two_lines, "one line")):
        path = tmp_path / "d.jsonl"
        path.write_text(json.dumps(bad) + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=message):
            read_jsonl(path, "describe")
