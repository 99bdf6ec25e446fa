"""The people the texts are about, and the pools they are drawn from: names from 28 naming traditions, cities
and towns, e-mail addresses built the ways people build them, jobs and relatives; how every pool is split
between train and eval; and make_person, which draws one person record (the gold answer is made from it)."""

import re
import zlib
from dataclasses import dataclass
from datetime import date

from generator.settings import FIRST_SIGNUP, LAST_SIGNUP, P_HELD_OUT, P_MISSING, P_ONLY_NAME
from generator.spelling import ascii_fold, ascii_lower, random_date
from generator.vocab import vocab

# ====================================================================================================
# The pools. Each is a table in data/vocab/ (see generator/vocab.py).
# ====================================================================================================
# Names from 28 naming traditions, each {"female": [...], "male": [...], "family": [...]}; family-name endings
# that change for a woman (Kowalski -> Kowalska; an ending with a trailing space is a prefix: "bin " -> "bint ");
# how often a tradition puts the family name first; which take two family names, or no middle name; titles.
CULTURES, FEMININE, FAMILY_FIRST, TWO_SURNAMES, NO_MIDDLE, TITLES = vocab(
    "names", "cultures", "feminine", "family_first", "two_surnames", "no_middle", "titles")

# Cities and towns by country; for the US, Canada and Australia the state follows the city ("Austin TX").
[CITIES] = vocab("cities", "cities")

# E-mail domains: webmail and ISPs, universities, and made-up companies under many country endings; handles
# people pick instead of their name; phone number patterns (# is a digit). Jobs and relatives for the
# phrasings and distractors: those older or younger than the person, and those of one gender.
WEBMAIL, UNIVERSITIES, COMPANIES, COMPANY_ENDINGS, HANDLES, PHONES = vocab(
    "contacts", "webmail", "universities", "companies", "company_endings", "handles", "phones")
[JOBS] = vocab("jobs", "jobs")
RELATIVES, OLDER, YOUNGER, FEMALE_RELATIVES, MALE_RELATIVES = vocab(
    "relatives", "relatives", "older", "younger", "female", "male")


@dataclass(frozen=True)
class City:
    name: str
    country: str
    region: str | None = None


def city_of(entry: str, country: str) -> City:
    if country in ("USA", "Canada", "Australia"):  # "Austin TX": the state comes last
        name, region = entry.rsplit(" ", 1)
        return City(name, country, region)
    return City(entry, country)


ALL_CITIES = [city_of(entry, country) for country, entries in CITIES.items() for entry in entries]


def write_city(rng, city: City) -> tuple[str, str]:
    """(the city as written, what the text shows): 'Krakow' without accents, 'Porto, Portugal', 'Austin, TX'."""
    name = ascii_fold(city.name) if rng.random() < 0.3 else city.name
    r = rng.random() if city.country != city.name else 1  # no "Singapore, Singapore"
    if city.region and r < 0.45:
        return name, f"{name}, {city.region}"
    return name, f"{name}, {city.country}" if r < 0.15 else f"{name} ({city.country})" if r < 0.2 else name


# ====================================================================================================
# Train / eval split of the pools. One rule for every pool: an item is held out for eval when its
# checksum says so (stable across runs and edits elsewhere). A held-out item that also shows inside a train
# one (Cruz in "Dela Cruz", Sofia the name and Sofia the city) would leak, so it stays in train.
# ====================================================================================================
def held_out(item: str) -> bool:
    return zlib.crc32(item.encode("utf-8")) % 5 == 0


def feminine(family: str, culture: str) -> str:
    for old, new in FEMININE.get(culture, {}).items():
        if old.endswith(" ") and family.startswith(old):
            return new + family[len(old):]
        if not old.endswith(" ") and family.endswith(old):
            return family[: -len(old)] + new
    return family


def split_pools():
    every = [x for parts in CULTURES.values() for part in parts.values() for x in part]
    every += [feminine(x, c) for c, parts in CULTURES.items() for x in parts["family"]]
    every += [c.name for c in ALL_CITIES]
    held = {x for x in every if held_out(x)}
    while True:
        train = {x for x in every if x not in held} | set(CITIES) | {c.region for c in ALL_CITIES if c.region}
        blob = " | ".join(sorted(train | {ascii_fold(x) for x in train}))
        leaks = {x for x in held if re.search(rf"(?<!\w){re.escape(x)}(?!\w)", blob)}
        if not leaks:
            return held
        held -= leaks


HELD = split_pools()
NAMES = {split: {culture: {part: [x for x in names if (x in HELD) == (split == "eval")]
                           for part, names in parts.items()}  # female, male, family
                 for culture, parts in CULTURES.items()}
         for split in ("train", "eval")}
CITY_POOL = {"train": [c for c in ALL_CITIES if c.name not in HELD],
             "eval_only": [c for c in ALL_CITIES if c.name in HELD]}


# ====================================================================================================
# E-mail addresses: the ways people build them.
# ====================================================================================================
def company_domain(rng) -> str:
    word = rng.choice(COMPANIES) + rng.choice(["", "", "", "-labs", "-studio", "-group", "-digital", "-health"])
    sub = rng.choice(["", "", "", "", "mail.", "eu.", "uk.", "corp.", "staff."])
    return f"{sub}{word}.{rng.choice(COMPANY_ENDINGS)}"


def make_email(rng, given: str, family: str) -> str:
    """An address the way people really have them: from the name in many ways, or a handle; many domains."""
    f = ascii_lower(given.split()[0]).replace("-", "")
    s = ascii_lower(family).replace("-", rng.choice(["", "-"])) or f
    n, yy = rng.randint(1, 999), rng.choice([rng.randint(60, 99), rng.randint(0, 9)])  # a number, a birth year
    tag = rng.choice(["shop", "news", "work", "billing", "signup", "2024", "apps"])  # plus-addressing
    local = rng.choice([
        f"{f}.{s}", f"{f}{s}", f"{f}_{s}", f"{f}-{s}", f"{s}.{f}", f"{f[0]}{s}", f"{f[0]}.{s}", f"{f}.{s}{yy:02d}",
        f"{f}{n}", f"{s}{f[0]}{n}", f"{f}+{tag}", f"{f}.{s}+{tag}", f"{rng.choice(HANDLES)}{n}",
        f"{rng.choice(HANDLES)}_{rng.choice(HANDLES)}", f"{f}{s[0]}", f"{f[:3]}{s[:3]}{yy:02d}", f"the{f}",
        f"{f}.{rng.choice('abcdefghjklmnprstw')}.{s}", f"{f[0]}{s[0]}{n}", f"{f}_{n}"])
    kind = rng.choices(["webmail", "company", "university"], weights=[60, 28, 12])[0]
    domain = {"webmail": rng.choice(WEBMAIL), "company": company_domain(rng),
              "university": rng.choice(UNIVERSITIES)}[kind]
    return f"{local}@{domain}"


# ====================================================================================================
# People.
# ====================================================================================================
@dataclass
class Person:
    name: str  # as the text writes it (the gold, unless the whole text is lowercased)
    given: str  # what an e-mail sign-off uses
    family: str
    she: bool
    title: str | None  # "Dr." in the text; never in the gold
    age: int | None
    city: City | None
    email: str | None
    signup: date | None


def pick(rng, split: str, culture: str, part: str) -> str:
    """A name part from this split's pool of that culture, or of any culture if that one has none left."""
    pool = NAMES[split][culture][part] or [x for c in NAMES[split].values() for x in c[part]]
    return rng.choice(pool)


def make_person(rng, split: str) -> Person:
    culture = rng.choice(sorted(CULTURES))
    she = rng.random() < 0.5
    gender = "female" if she else "male"

    def family_name():
        name = pick(rng, split, culture, "family")
        return feminine(name, culture) if she else name

    given, family, second, r = pick(rng, split, culture, gender), family_name(), family_name(), rng.random()
    if culture in TWO_SURNAMES and r < 0.3 and second != family:  # a second family name: "García Márquez"
        family += " " + second
    elif culture not in FAMILY_FIRST and r > 0.95 and second != family:  # double-barrelled: "Nowak-Zielińska"
        family += "-" + second
    family_first = rng.random() < FAMILY_FIRST.get(culture, 0)  # "Nguyễn Linh", "Nagy Eszter"
    middle, r = None, rng.random()
    if r < 0.12 and not family_first:
        middle = rng.choice("ABCDEFGHJKLMNPRSTVW") + "."
    elif r < 0.25 and culture not in NO_MIDDLE:
        middle = pick(rng, split, culture, gender)
        middle = None if middle == given else middle
    first_part = " ".join(p for p in (given, middle) if p)
    name = f"{family} {first_part}" if family_first else f"{first_part} {family}"
    if rng.random() < 0.06:  # typed without accents: the gold is the name as written
        name, given, family = ascii_fold(name), ascii_fold(given), ascii_fold(family)
    only_name = rng.random() < P_ONLY_NAME

    def maybe(value):  # every value is drawn, even one left out, so the random stream stays simple
        return None if only_name or rng.random() < P_MISSING else value

    pool = CITY_POOL["eval_only"] if split == "eval" and rng.random() < P_HELD_OUT else CITY_POOL["train"]
    title = rng.choice(TITLES[gender]) if rng.random() < 0.1 else None
    return Person(name, given, family, she, title, age=maybe(rng.randint(18, 90)), city=maybe(rng.choice(pool)),
                  email=maybe(make_email(rng, given, family)),
                  signup=maybe(random_date(rng, FIRST_SIGNUP, LAST_SIGNUP)))
