"""The scorer decides what "better after training" means, so its strictness is pinned down here."""

import json

import pytest

from ftlab.metrics import answers_question, describe_score, format_scores, parse_json_object, probe_score, score
from ftlab.task import FIELDS

DROP = object()  # answer(email=DROP) leaves the key out
GOLD = {"name": "Ana Silva", "age": 30, "city": "Lisbon", "email": None, "signup_date": "2024-03-05"}


def answer(**changes):
    """GOLD as the model would print it, with some values changed (or dropped, given DROP)."""
    target = {k: v for k, v in {**GOLD, **changes}.items() if v is not DROP}
    return json.dumps(target)



def test_perfect_predictions_score_one_everywhere():
    result = score([answer(), "  " + answer() + "\n"], [GOLD, GOLD])
    assert result == {"n": 2, "valid_json": 1.0, "exact_match": 1.0, "fields": {f: 1.0 for f in FIELDS}}


@pytest.mark.parametrize("text", [
    "Sure! Here is the JSON: " + json.dumps(GOLD),
    "```json\n" + json.dumps(GOLD) + "\n```",
    json.dumps(GOLD) + "\nHope this helps!",
    json.dumps(GOLD) + json.dumps(GOLD),
    "name: Ana Silva\nage: 30",
    json.dumps([GOLD]),
    "",
])
def test_anything_but_one_bare_object_is_invalid(text):
    assert parse_json_object(text) is None
    result = score([text], [GOLD])
    assert result["valid_json"] == 0 and result["exact_match"] == 0
    assert all(rate == 0 for rate in result["fields"].values())


@pytest.mark.parametrize("wrong_age", ["30", 30.0, True, None])
def test_age_must_be_the_integer_itself(wrong_age):
    gold = {**GOLD, "age": 1} if wrong_age is True else GOLD
    result = score([answer(age=wrong_age)], [gold])
    assert result["valid_json"] == 1 and result["exact_match"] == 0
    assert result["fields"]["age"] == 0
    assert all(result["fields"][f] == 1 for f in FIELDS if f != "age")


def test_missing_key_fails_exact_match_but_not_the_other_fields():
    result = score([answer(email=DROP)], [GOLD])
    assert result["exact_match"] == 0 and result["fields"]["email"] == 0
    assert all(result["fields"][f] == 1 for f in FIELDS if f != "email")


def test_extra_key_fails_exact_match_only():
    result = score([answer(phone="555-0100")], [GOLD])
    assert result["exact_match"] == 0 and all(rate == 1 for rate in result["fields"].values())


def test_key_order_does_not_matter_for_exact_match():
    reordered = json.dumps(dict(reversed(list(GOLD.items()))))
    assert score([reordered], [GOLD])["exact_match"] == 1


def test_rates_are_fractions_of_all_examples():
    result = score([answer(), answer(city="Porto"), "oops", answer()], [GOLD] * 4)
    assert result["n"] == 4
    assert result["valid_json"] == 0.75 and result["exact_match"] == 0.5
    assert result["fields"]["city"] == 0.5 and result["fields"]["name"] == 0.75


@pytest.mark.parametrize("predictions, golds", [([answer()], [GOLD, GOLD]), ([], [])])
def test_mismatched_or_empty_inputs_raise(predictions, golds):
    with pytest.raises(ValueError):
        score(predictions, golds)


def test_a_repeated_key_is_invalid_not_the_last_value():
    """json.loads keeps the last of two equal keys: {"name": "Bob", "name": "Ana Silva", ...} must not pass."""
    text = '{"name": "Bob", ' + answer()[1:]
    assert json.loads(text) == GOLD  # what plain json.loads would have scored as exact
    assert parse_json_object(text) is None
    assert score([text], [GOLD])["valid_json"] == 0


@pytest.mark.parametrize("reply, right", [
    ("The capital of France is Paris.", True),
    ("paris", True),
    ("It is Parisian food you mean?", False),  # a word that contains the answer is not the answer
    ('{"name": "Paris Hilton", "age": null}', True),  # the probe checks content only, not form
    ("I don't know.", False),
])
def test_probe_answers_are_whole_words_any_case(reply, right):
    assert answers_question(reply, ["Paris"]) is right


def test_probe_score_is_the_share_answered():
    questions = [{"question": "2+2?", "answers": ["4", "four"]}, {"question": "Capital of Italy?", "answers": ["Rome"]}]
    assert probe_score(["Four.", "Milan"], questions) == {"n": 2, "correct": 0.5}
    with pytest.raises(ValueError):
        probe_score(["4"], questions)


def test_format_scores_shows_each_set_before_and_after_and_every_row():
    before = {"synthetic": score(["Sure! " + answer(), answer(age="30")], [GOLD, GOLD]),
              "handwritten": score(["no"], [GOLD]), "probe": {"n": 4, "correct": 0.75}}
    after = {"synthetic": score([answer(), answer(city="Porto")], [GOLD, GOLD]),
             "handwritten": score([answer()], [GOLD]), "probe": {"n": 4, "correct": 0.5}}
    table = format_scores(before, after)
    assert "synthetic" in table and "handwritten" in table and "before" in table and "after" in table
    for label in ("valid JSON", "exact match", *FIELDS):
        assert label in table
    age_row = next(line for line in table.splitlines() if line.startswith("age"))
    assert age_row.split()[1:] == ["0.0%", "100.0%", "0.0%", "100.0%"]
    city_row = next(line for line in table.splitlines() if line.startswith("city"))
    assert city_row.split()[1:] == ["50.0%", "50.0%", "0.0%", "100.0%"]
    assert "75% -> 50%" in table.splitlines()[-1]


def test_format_scores_without_before():
    table = format_scores(None, {"synthetic": score([answer()], [GOLD])})
    assert "before" not in table and "100.0%" in table
    assert len({len(line) for line in table.splitlines()[1:]}) == 1  # aligned columns


# ---- The describe task: one sentence, every fact in its form, nothing made up.
RECORD = {"name": "Ana Ruiz", "age": 34, "city": "Porto", "email": "ana.ruiz7@gmail.com", "signup_date": "2021-03-05"}


@pytest.mark.parametrize("sentence, right", [
    ("Ana Ruiz is 34, lives in Porto, uses ana.ruiz7@gmail.com and joined on March 5, 2021.", True),
    ("Ana Ruiz (34) joined on March 5, 2021, lives in Porto and writes from ana.ruiz7@gmail.com.", True),
    ("Ana Ruiz is 34, lives in Porto, uses ana.ruiz7@gmail.com and joined on 2021-03-05.", False),  # ISO date
    ("Ana Ruiz is 34, lives in Porto and joined on March 5, 2021.", False),  # the e-mail left out
    ("Ana Ruiz is 34, lives in Porto, uses ana.ruiz7@gmail.com and joined on March 5, 2021", False),  # no "."
    ("Ana Ruiz is 34, lives in porto, uses ana.ruiz7@gmail.com and joined on March 5, 2021.", False),  # not copied
    ("Ana Ruiz is 34,\nlives in Porto, uses ana.ruiz7@gmail.com and joined on March 5, 2021.", False),  # 2 lines
    ("Ana Ruiz is 34, lives in Porto (pop. 230000), uses ana.ruiz7@gmail.com and joined on March 5, 2021.",
     False),  # a number the record does not hold
    ("Ana Ruiz is 34, lives in Porto, uses ana.ruiz7@gmail.com or ana@work.pt and joined on March 5, 2021.",
     False),  # another address
])
def test_describe_score_one_sentence(sentence, right):
    assert describe_score([sentence], [RECORD])["exact_match"] == right


def test_describe_score_nulls_must_not_be_spoken_and_age_is_not_read_from_the_date():
    record = {**RECORD, "age": 21, "email": None, "signup_date": "2021-03-21"}
    assert describe_score(["Ana Ruiz lives in Porto and joined on March 21, 2021."], [record])["fields"]["age"] == 0
    said_null = describe_score(["Ana Ruiz is 21, lives in Porto, e-mail unknown, joined on March 21, 2021."], [record])
    assert said_null["exact_match"] == 0 and said_null["invented"] == 1 and said_null["fields"]["age"] == 1


def test_describe_score_fields_count_only_records_that_hold_the_field():
    records = [RECORD, {**RECORD, "email": None}]
    result = describe_score(["Ana Ruiz, 34, lives in Porto.", "Ana Ruiz, 34, lives in Porto."], records)
    assert result["fields"]["email"] == 0 and result["fields"]["city"] == 1 and result["exact_match"] == 0
    assert result["one_sentence"] == 1 and result["n"] == 2


def test_format_scores_mixes_tasks_with_a_dash_where_a_measure_is_not_the_sets():
    after = {"extract": score([answer()], [GOLD]), "describe": describe_score(["Ana Ruiz."], [RECORD])}
    table = format_scores(None, after)
    assert "valid JSON" in table and "one sentence" in table and "invented a fact" in table
    assert next(line for line in table.splitlines() if line.startswith("valid JSON")).rstrip().endswith("-")
