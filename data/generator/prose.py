"""Prose for continued pre-training (01_full_finetuning): plain paragraphs about the same world, with no
prompt, no JSON and no chat template. People, cities, dates and e-mail addresses are drawn as for the texts
(the eval paragraphs from eval's own names and held-out cities), in the many ways the generator writes them. A
model that reads this gets used to how such facts are written: that is all continued pre-training can give
the task, since it never shows the task itself."""

from datetime import date

from generator.draft import SLOT, Draft
from generator.people import (
    CITY_POOL,
    FEMALE_RELATIVES,
    JOBS,
    MALE_RELATIVES,
    RELATIVES,
    make_email,
    make_person,
    write_city,
)
from generator.settings import FIRST_SIGNUP, LAST_SIGNUP, TODAY
from generator.spelling import age_in_words, random_date, write_date
from generator.vocab import vocab

[PROSE] = vocab("prose", "prose")  # the sentences of each topic: born, age, city, job, email, signup...


def make_prose(rng, split: str) -> str:
    """One paragraph about one person: their facts in random order, with a relative and a line about a place."""
    p = make_person(rng, split)
    age = p.age or rng.randint(18, 90)
    city = p.city or rng.choice(CITY_POOL["eval_only" if split == "eval" else "train"])
    draft = Draft(rng, split, p)
    job, relative = rng.choice(JOBS), rng.choice(RELATIVES)
    gender = "female" if relative in FEMALE_RELATIVES else "male" if relative in MALE_RELATIVES else None
    birthday = random_date(rng, date(TODAY.year - age - 1, TODAY.month, 2), date(TODAY.year - age, TODAY.month, 1))
    values = {
        "name": p.name, "She": "She" if p.she else "He", "she": "she" if p.she else "he",
        "Her": "Her" if p.she else "His", "her": "her" if p.she else "his", "age": str(age),
        "age_words": age_in_words(age) if age < 100 else str(age), "city": write_city(rng, city)[1],
        "city0": city.name, "country": city.country, "birth_place": draft.other_city(),
        "birth_year": str(birthday.year), "move_year": str(rng.randint(TODAY.year - 20, TODAY.year - 1)),
        "birthday": write_date(rng, birthday)[1],
        "a_job": ("an " if job[0] in "aeiou" else "a ") + job, "n": str(rng.randint(2, 15)),
        "email": p.email or make_email(rng, p.given, p.family),
        "date": write_date(rng, p.signup or random_date(rng, FIRST_SIGNUP, LAST_SIGNUP))[1],
        "relative": relative, "other": f"{draft.other_given(gender)} {draft.other_name().split()[-1]}",
        "other_city": draft.other_city(),
        "other_age": str(rng.randint(18, 90)),
    }
    topics = ["born", "age", "city", "job", "email", "signup", "relative"]
    chosen = ["born"] + rng.sample(topics[1:], rng.randint(3, 6)) + (["place"] if rng.random() < 0.5 else [])
    return " ".join(SLOT.sub(lambda m: values[m[1]], rng.choice(PROSE[topic])) for topic in chosen)
