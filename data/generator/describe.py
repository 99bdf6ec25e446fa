"""The second task (07_model_merging): a person's JSON record -> one sentence that states each fact. The
record is the gold answer of an extraction example (train records for train, eval's for eval), so the two
tasks share their people and differ only in the skill. The sentence is composed, not templated: a few ways to
say each fact, in the record's order or shuffled, joined as English joins a list."""

from ftlab.task import FIELDS, date_in_words
from generator.vocab import vocab

# Clauses per fact ("lives in {city}"), the name with the age beside it, and what a name-only record says.
DESCRIBE, APPOSITIVE_AGE, NAME_ONLY = vocab("describe", "clauses", "appositive_age", "name_only")


def describe(rng, record: dict) -> str:
    """One sentence stating every non-null field of `record` (the date written out), and nothing else."""
    values = {"name": record["name"], "age": record["age"], "city": record["city"], "email": record["email"],
              "date": date_in_words(record["signup_date"]) if record["signup_date"] else None}
    facts = [f for f in FIELDS[1:] if record[f] is not None]
    if not facts:
        return rng.choice(NAME_ONLY).format(**values)
    subject = "{name}"
    if "age" in facts and len(facts) > 1 and rng.random() < 0.4:  # "Ana Ruiz, 34, lives in ..."
        subject = rng.choice(APPOSITIVE_AGE)
        facts.remove("age")
    if rng.random() < 0.3:
        rng.shuffle(facts)
    clauses = [rng.choice(DESCRIBE[f]) for f in facts]
    listed = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{subject} {listed}.".format(**values)
