"""Write the task's data: sentences about made-up people, and the JSON each one should become.

Why synthetic: we know the right answer for every line, because each sentence is written *from* a
person record, and the target JSON comes from that record, never parsed back out of the text.

Why so many shapes: a model that only ever saw "Name: X; Age: Y" learns a template, not the task. So
the texts come in ~30 phrasings (chat, CRM note, e-mail signature, form dump, bullet list, log line...),
fields appear in many orders or not at all, dates are written nine ways, and most texts carry a
distractor: a relative's age or city, a phone or order number, a last-login date, someone else's e-mail.
The eval split uses different phrasings and different names, so its score measures the skill, not
recall of the training lines.

    python3 data/generate.py              # rewrites data/*.jsonl; same seed -> same bytes
    python3 data/generate.py --seed 1 --out /tmp/data
"""

import argparse
import json
import random
import re
import sys
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the ftlab package (one folder up) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftlab.data import ERROR_KINDS
from ftlab.metrics import score
from ftlab.task import FIELDS, prompt_messages

DEFAULT_SIZES = {"sft_train": 800, "sft_eval": 100, "preference": 400, "rl_prompts": 300}
P_MISSING = 0.3  # each field but the name is left out of the text this often
P_ONLY_NAME = 0.03  # and sometimes the text says nothing but the name

# --- Pools. Train and eval names are disjoint, so eval cannot be solved by remembering train lines.
NAMES = {
    "train": {
        "female": ["Anna", "Maria", "Sofia", "Zoë", "Ingrid", "Priya", "Aiko", "Fatima", "Chloé", "Olga",
                   "Lucía", "Amara", "Mei", "Hanna", "Siobhán", "Yasmin", "Elena", "Nadia", "Freya",
                   "Beatriz", "Agnieszka", "Leila", "Camille", "Kateřina"],
        "male": ["José", "Łukasz", "Liam", "Mateo", "Kenji", "Omar", "Lars", "Rahul", "Pierre", "Dmitri",
                 "Kwame", "Tomás", "Jonas", "Ahmed", "Felix", "Björn", "Chen", "Mehmet", "Diego", "Sven",
                 "Arjun", "Nikolai", "Emeka", "Andrés"],
        "last": ["Silva", "Nowak", "Berg", "Tanaka", "Okafor", "Müller", "García", "Kowalski", "Haddad",
                 "Johansson", "Patel", "Nguyen", "Rossi", "Dubois", "O'Brien", "Schmidt", "Novák", "Costa",
                 "Yilmaz", "Kim", "Mensah", "Fernández", "Lindqvist", "Popescu", "Andersen", "Sato", "Kaur",
                 "Moreau", "Byrne", "Horvat", "Jensen", "Alvarez", "Wójcik", "Santos", "Hughes", "Reyes",
                 "Chowdhury", "Ødegaard", "Virtanen", "Bauer"],
    },
    "eval": {
        "female": ["Ewa", "Astrid", "Noor", "Keiko", "Chiara", "Aoife", "Marta", "Zainab", "Inês", "Signe",
                   "Dóra", "Renée", "Tamar", "Folake"],
        "male": ["Jürgen", "Nuno", "Oskar", "Hamid", "Rafael", "Tariq", "Mikael", "Sebastián", "Bogdan",
                 "Kofi", "Henrik", "Takeshi", "Ciarán", "Matías"],
        "last": ["Kovač", "Lindgren", "Adeyemi", "Nakamura", "Ferreira", "Brennan", "Sørensen", "Zieliński",
                 "Romano", "Haas", "Abdullah", "Mwangi", "Laurent", "Gallagher", "Öztürk", "Castillo",
                 "Eriksen", "Varga", "Rahman", "Duarte", "Hoffmann", "Quispe", "Bianchi", "Szabó"],
    },
}
CITIES = ["Lisbon", "Oslo", "Kraków", "São Paulo", "Zürich", "Malmö", "Reykjavík", "New York", "Buenos Aires",
          "Cape Town", "Nairobi", "Toronto", "Melbourne", "Osaka", "Seoul", "Mumbai", "Lagos", "Dublin",
          "Berlin", "Marseille", "Montréal", "Austin", "Edinburgh", "Porto", "Gdańsk", "Istanbul", "Hanoi",
          "Vancouver", "Bogotá", "Tallinn", "Wellington", "Kyiv", "Accra", "Valencia", "Leeds", "Denver"]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com", "gmx.de", "hotmail.co.uk",
           "fastmail.com", "mail.com", "web.de", "posteo.net", "acme.io", "northwind.co"]
NICKNAMES = ["sunny", "bluefox", "nightowl", "coffeelover", "pixel", "riverstone", "moonbeam", "tinker",
             "wanderer", "cobalt", "maple"]
RELATIVES = ["brother", "sister", "cousin", "roommate", "colleague", "partner", "friend", "neighbour"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FIRST_SIGNUP, LAST_SIGNUP = date(2015, 1, 1), date(2026, 6, 30)

# --- Dates. The target is always ISO; the text is not. Numeric day/month forms are only used when the
# day is over 12, so they cannot be misread: dots are always day.month, slashes-with-year-last month/day.
DATE_FORMATS = ["month_day_year", "day_month_year", "ordinal", "iso", "slashed_ymd", "short_month",
                "weekday", "dotted_dmy", "slashed_mdy"]
NEEDS_DAY_OVER_12 = {"dotted_dmy", "slashed_mdy"}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def write_date(d: date, fmt: str) -> str:
    month = MONTHS[d.month - 1]
    return {
        "month_day_year": f"{month} {d.day}, {d.year}",  # March 5, 2024
        "day_month_year": f"{d.day} {month} {d.year}",  # 5 March 2024
        "ordinal": f"{ordinal(d.day)} of {month}, {d.year}",  # 5th of March, 2024
        "iso": d.isoformat(),  # 2024-03-05
        "slashed_ymd": f"{d.year}/{d.month:02d}/{d.day:02d}",  # 2024/03/05
        "short_month": f"{month[:3]} {d.day} {d.year}",  # Mar 5 2024
        "weekday": f"{WEEKDAYS[d.weekday()]}, {month} {d.day}, {d.year}",  # Tuesday, March 5, 2024
        "dotted_dmy": f"{d.day:02d}.{d.month:02d}.{d.year}",  # 15.03.2024
        "slashed_mdy": f"{d.month:02d}/{d.day:02d}/{d.year}",  # 03/15/2024
    }[fmt]


def pick_date_format(rng, d: date, allowed) -> str:
    fmt = rng.choice(allowed)
    if fmt in NEEDS_DAY_OVER_12 and d.day <= 12:
        fmt = rng.choice([f for f in allowed if f not in NEEDS_DAY_OVER_12])
    return fmt


def random_date(rng, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, (end - start).days))


UNITS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = {18: "eighteen", 19: "nineteen"}
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def age_in_words(n: int) -> str:
    """18..90 -> 'thirty-two'."""
    if n in TEENS:
        return TEENS[n]
    return TENS[n // 10] + (f"-{UNITS[n % 10]}" if n % 10 else "")


# --- People.
@dataclass
class Person:
    first: str
    last: str
    middle: str | None
    she: bool
    age: int | None
    city: str | None
    email: str | None
    signup: date | None

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first, self.middle, self.last) if p)

    def target(self) -> dict:
        """The answer, built from the record (keys in FIELDS order)."""
        signup = self.signup.isoformat() if self.signup else None
        return dict(zip(FIELDS, (self.name, self.age, self.city, self.email, signup), strict=True))


ASCII = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "ß": "ss", "'": "", " ": ""})


def ascii_lower(s: str) -> str:
    """'Łukasz' -> 'lukasz', "O'Brien" -> 'obrien': what people type into an e-mail address."""
    return unicodedata.normalize("NFKD", s.translate(ASCII)).encode("ascii", "ignore").decode().lower()


def make_email(rng, first: str, last: str) -> str:
    f, s = ascii_lower(first), ascii_lower(last)
    local = rng.choice([f"{f}.{s}", f"{f}{s}", f"{f[0]}{s}", f"{f}_{s}{rng.randint(1, 99)}",
                        f"{f}{rng.randint(70, 99)}", f"{s}.{f[0]}",
                        f"{rng.choice(NICKNAMES)}{rng.randint(1, 999)}"])  # unrelated to the name
    return f"{local}@{rng.choice(DOMAINS)}"


def make_person(rng, split: str) -> Person:
    """A random person from the name pools of `split` ("train" or "eval"); None marks a missing field."""
    pool = NAMES[split]
    she = rng.random() < 0.5
    first = rng.choice(pool["female"] if she else pool["male"])
    last = rng.choice(pool["last"])
    middle = rng.choice("ABCDEFGHJKLMNPRSTW") + "." if rng.random() < 0.15 else None
    only_name = rng.random() < P_ONLY_NAME

    def maybe(value):  # every value is drawn, even one left out, so the random stream stays simple
        return None if only_name or rng.random() < P_MISSING else value

    return Person(first, last, middle, she, age=maybe(rng.randint(18, 90)), city=maybe(rng.choice(CITIES)),
                  email=maybe(make_email(rng, first, last)),
                  signup=maybe(random_date(rng, FIRST_SIGNUP, LAST_SIGNUP)))


# --- Distractors: true facts about something else. Each returns its text in three voices, and what a
# careless model might copy into the answer ("steal"), which the preference data uses as a wrong answer.
def other_name(rng, p: Person, split: str) -> str:
    while True:
        pool = NAMES[split]
        name = f"{rng.choice(pool['female'] + pool['male'])} {rng.choice(pool['last'])}"
        if name != p.name:
            return name


def distractor(rng, kind: str, p: Person, split: str) -> tuple[dict, dict]:
    She, Her = ("She", "Her") if p.she else ("He", "His")
    her = Her.lower()
    if kind == "relative":
        rel = rng.choice(RELATIVES)
        near = p.age or rng.randint(25, 70)
        age = rng.choice([a for a in range(max(18, near - 12), min(90, near + 12) + 1) if a != p.age])
        city = rng.choice([c for c in CITIES if c != p.city])
        shape = rng.randrange(3)
        if shape == 0:
            return {"i": f"My {rel}, {age}, lives in {city}.", "they": f"{Her} {rel}, {age}, lives in {city}.",
                    "form": f"Emergency contact: {rel}, {age}, {city}"}, {"age": age, "city": city}
        if shape == 1:
            return {"i": f"My {rel} is {age} and wants an account too.",
                    "they": f"{Her} {rel} ({age}) may sign up as well.",
                    "form": f"Household member: {rel}, {age}"}, {"age": age}
        return {"i": f"My {rel} lives in {city}.", "they": f"{Her} {rel} is based in {city}.",
                "form": f"Billing contact: {rel}, {city}"}, {"city": city}
    if kind == "phone":
        phone = rng.choice([f"+44 7700 900{rng.randint(100, 999)}", f"+1 555-01{rng.randint(10, 99)}",
                            f"+49 151 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                            f"+47 {rng.randint(400, 999)} {rng.randint(10, 99)} {rng.randint(100, 999)}"])
        return {"i": rng.choice([f"My number is {phone}.", f"You can also call me on {phone}."]),
                "they": rng.choice([f"Callback number: {phone}.", f"{She} left {her} number, {phone}."]),
                "form": f"Phone: {phone}"}, {}
    if kind == "order":
        n = rng.randint(10000, 99999)
        return {"i": rng.choice([f"This is about order #{n}.", f"My order number is {n}."]),
                "they": rng.choice([f"Ticket refers to order #{n}.", f"{She} asked about order {n}."]),
                "form": f"Order: #{n}"}, {}
    if kind == "other_date":
        what = rng.choice(["last_login", "renewal", "birthday"])
        if what == "birthday":  # no year, so it cannot be mistaken for a full date, but it is a date
            d = random_date(rng, date(2001, 1, 1), date(2001, 12, 31))
            w = rng.choice([f"{d.day} {MONTHS[d.month - 1]}", f"{MONTHS[d.month - 1]} {d.day}"])
            return {"i": f"My birthday is on {w}, by the way.", "they": f"{Her} birthday is {w}.",
                    "form": f"Birthday: {w}"}, {}
        if what == "renewal":  # after every signup date
            d = random_date(rng, LAST_SIGNUP + timedelta(days=1), date(2027, 6, 30))
        else:  # a last login comes after the signup
            start = p.signup + timedelta(days=1) if p.signup else FIRST_SIGNUP
            d = random_date(rng, start, max(start, LAST_SIGNUP))
        w = write_date(d, pick_date_format(rng, d, DATE_FORMATS))
        if what == "renewal":
            return {"i": f"My plan renews on {w}.", "they": f"{Her} plan renews on {w}.",
                    "form": f"Renewal: {w}"}, {"signup_date": d.isoformat()}
        return {"i": f"I last logged in on {w}.", "they": f"{She} last logged in on {w}.",
                "form": f"Last login: {w}"}, {"signup_date": d.isoformat()}
    if kind == "referral":
        name = other_name(rng, p, split)
        return {"i": f"I was referred by {name}.", "they": f"{She} was referred by {name}.",
                "form": f"Referred by: {name}"}, {"name": name}
    if kind == "other_email":
        email = p.email
        while email == p.email:
            email = make_email(rng, *other_name(rng, p, split).split())
        return {"i": rng.choice([f"Please cc my colleague at {email}.", f"My partner uses {email}, so don't mix us up."]),
                "they": rng.choice([f"{Her} manager ({email}) is in cc.", f"Copying in {her} manager, {email}."]),
                "form": f"CC: {email}"}, {"email": email}
    n = rng.randint(2, 12)  # "count": a small number that is never an age (ages start at 18)
    return {"i": rng.choice([f"We need {n} seats for the team.", f"I'd like {n} gift cards."]),
            "they": f"{She} wants {n} licences for {her} team.", "form": f"Seats: {n}"}, {}


DISTRACTOR_KINDS = ["relative", "phone", "order", "other_date", "referral", "other_email", "count"]


# --- Templates. {name} is always there; a [bracketed part] is dropped when a field in it is missing.
# {age} may be words ("thirty-two"), {age_d} is always digits, {ref} is a ticket number (a distractor).
# With `sep`, the text is split on it and, if `shuffle`, the parts that hold a field are reordered.
# With `fill`, a missing field is sometimes written as "n/a", "-" or left blank instead of dropped.
@dataclass
class Template:
    id: str
    voice: str  # "i", "they" or "form": which wording the distractors use
    text: str
    sep: str | None = None
    shuffle: bool = False
    fill: bool = False
    dates: tuple = tuple(DATE_FORMATS)


NO_COMMA_DATES = ("iso", "slashed_ymd", "day_month_year", "short_month", "dotted_dmy")
TEMPLATES = {"train": [
    Template("chat_hi", "i", "Hi! I'm {name}[, {age} years old][ and I live in {city}].[ My email is {email}.][ I signed up on {date}.][ {noise}]"),
    Template("chat_lowercase", "i", "hey, {name} here[ ({age_d})][, based in {city}].[ joined {date}.][ {noise}][ email: {email}]"),
    Template("formal_letter", "i", "Good morning. My name is {name}[ and I am {age} years old].[ I am writing to you from {city}.][ {noise}][ I registered on {date}.][ Please reply to {email}.]"),
    Template("one_liner", "i", "{name}[, {age_d}][, {city}][, {email}][ — member since {date}]"),
    Template("support_ticket", "i", "Hello support, I can't log in anymore.[ {noise}][ My account email is {email}.][ I opened the account on {date}.][ I'm {age}, in case that matters.] Thanks, {name}[ ({city})]"),
    Template("story", "i", "[I moved to {city} a while ago and ]I finally made an account[ on {date}]! By the way, I'm {name}[ and I'm {age}].[ Write to me at {email}.][ {noise}]"),
    Template("voice_transcript", "i", "so um, this is {name}[, I'm {age}][, calling from {city}]...[ I think I signed up on {date}?][ my email's {email}.][ {noise}]"),
    Template("profile_bio", "i", "{name}[, {age_d}][, {city}]. Coffee snob, weekend hiker, terrible at karaoke.[ {noise}][ Member since {date}.][ Say hi: {email}]"),
    Template("review", "i", "Five stars from me, {name}![ I've been using the app since {date}.][ Greetings from {city}!][ {noise}][ (I'm {age}, and even I figured it out.)][ Questions? {email}]"),
    Template("reunion_post", "i", "Hello from {name}![ I'm {age} now, can you believe it?][ Still living in {city}.][ {noise}][ I joined this group on {date}.][ Email me: {email}]"),
    Template("signature_long", "i", "Thanks for the quick reply![ I've been a customer since {date}.][ {noise}]\n\nBest,\n{name}[\n{city}][\n{email}][\n\nP.S. I'm {age}, in case that matters for the discount.]"),
    Template("signature_mobile", "i", "Can you cancel my renewal?[ I'm {age} and money is tight right now.][ {noise}][ I've had the account since {date}.]\n--\n{name}[ | {city}][ | {email}]\nSent from my phone"),
    Template("tweet", "i", "just signed up[ on {date}] lol. {name}[, {age_d}][, {city}] 👋[ {noise}][ dm me or {email}]"),
    Template("crm_call", "they", "Customer {name}[ ({age_d})][ from {city}] called about billing.[ {noise}][ Account opened {date}.][ Contact: {email}]"),
    Template("call_log", "they", "CALL LOG — {name}[, {city}][, age {age_d}]. Wants a refund.[ Signed up {date}.][ {noise}][ Email on file: {email}]"),
    Template("third_person", "they", "{name}[, who is {age},][ lives in {city} and] joined us[ on {date}].[ {She} can be reached at {email}.][ {noise}]"),
    Template("welcome_post", "they", "Say hello to {name}[ from {city}][ ({age_d})]![ {She} joined on {date}.][ {noise}][ Drop {him} a line at {email}.]"),
    Template("raffle_blurb", "they", "[{city} resident ]{name}[, {age_d},] won our spring raffle.[ {She} has been a member since {date}.][ {noise}][ Winner's contact: {email}.]"),
    Template("hr_note", "they", "New hire: {name}.[ Age {age_d}.][ Based in {city}.][ Portal account created {date}.][ Work email: {email}.][ {noise}]"),
    Template("fyi_email", "they", "FYI, {name} reached out today.[ {She} is {age}.][ {She} lives in {city}.][ {noise}][ Signed up {date}.][ Reply to {email}.]"),
    Template("sales_lead", "they", "Lead: {name}[ ({city})] — interested in the annual plan.[ Age: {age_d}.][ {noise}][ Registered {date}.][ {email}]"),
    Template("mod_note", "they", "Mod note: user {name}[ ({age_d})] was flagged for spam by mistake.[ Location: {city}.][ Account created {date}.][ {noise}][ Mail: {email}]"),
    Template("delivery", "they", "Parcel for {name}[ in {city}].[ Recipient age checked: {age_d}.][ Customer since {date}.][ {noise}][ Notify {email}.]"),
    Template("reverse", "they", "[Signed up {date}. ][Email {email}. ][Based in {city}. ][Age {age_d}. ]Name: {name}.[ {noise}]"),
    Template("form_semicolon", "form", "Name: {name}; [Age: {age_d}]; [City: {city}]; [Email: {email}]; [Signup date: {date}]; [{noise}]", "; ", True, True),
    Template("form_lines", "form", "--- registration ---\nName: {name}\n[Age: {age_d}]\n[City: {city}]\n[E-mail: {email}]\n[Registered: {date}]\n[{noise}]", "\n", True, True),
    Template("key_value", "form", "name={name} | [age={age_d}] | [city={city}] | [email={email}] | [signup={date}]", " | ", True, True, ("iso", "slashed_ymd")),
    Template("bullets", "form", "New member details:\n- {name}\n[- {age} years old]\n[- lives in {city}]\n[- {email}]\n[- joined {date}]\n[- {noise}]", "\n", True),
    Template("log_line", "form", '[{date} ]signup ok user="{name}"[ email={email}][ city="{city}"][ age={age_d}] ref={ref}', dates=("iso", "slashed_ymd")),
    Template("interview", "form", "Q: Name? A: {name}\n[Q: Age? A: {age}]\n[Q: Where do you live? A: {city}]\n[Q: Email? A: {email}]\n[Q: When did you sign up? A: {date}]", "\n", True, True),
    Template("ticket_header", "form", "Ticket #{ref}\nFrom: {name}[ <{email}>]\n[Location: {city}]\n[Customer since: {date}]\n[Age: {age_d}]\n[{noise}]\nMessage: the export button does nothing.", "\n"),
], "eval": [
    Template("ev_callback", "i", "Hi, it's {name} calling back.[ Home for me is {city}.][ {noise}][ You can email me at {email}.][ My account is from {date}, I believe.][ And yes, I'm {age}.]"),
    Template("ev_greetings", "i", "[Greetings from {city}! ]This is {name}[ ({age_d})].[ I became a member on {date}.][ {noise}][ Best address for me: {email}.]"),
    Template("ev_slang", "i", "yo it's {name}[, {age_d} y/o][ from {city}]![ signed up {date}.][ {noise}][ 📧 {email}]"),
    Template("ev_apology", "i", "Sorry for the late reply![ {noise}] Here are my details as requested: I'm {name}[, I'm {age}][, and I live in {city}].[ The account was created on {date}.][ Email: {email}]"),
    Template("ev_profile_update", "they", "{name} updated {her} profile.[ New city: {city}.][ Age on profile: {age_d}.][ {noise}][ Contact address: {email}.][ Original signup: {date}.]"),
    Template("ev_passive", "they", "[On {date}, ]{name} opened an account with us.[ {She} gave {her} age as {age}.][ Home city: {city}.][ {noise}][ Preferred email: {email}.]"),
    Template("ev_yaml_like", "form", "name: {name}\n[age: {age_d}]\n[city: {city}]\n[mail: {email}]\n[joined: {date}]\n[{noise}]", "\n", True, True),
    Template("ev_member_card", "form", "Member card · {name} · [age {age_d}] · [{city}] · [{email}] · [since {date}]", " · ", dates=NO_COMMA_DATES),
    Template("ev_admin_export", "form", "user {name}, [aged {age}], [in {city}], [mail {email}], [created {date}]", ", ", True, dates=NO_COMMA_DATES),
    Template("ev_questionnaire", "form", "What's your name? {name}\n[How old are you? {age}]\n[Where are you based? {city}]\n[Best email? {email}]\n[When did you join? {date}]", "\n", True, True),
]}
FIELD_SLOTS = {"name", "age", "age_d", "city", "email", "date", "noise"}
FILLERS = ["n/a", "-", "N/A", "unknown", "none", ""]
SLOT = re.compile(r"\{(\w+)\}")
OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def fill_in(text: str, values: dict) -> str:
    """Drop each [part] that names a missing value, then substitute the rest."""
    def keep(m):
        return "" if any(values[k] is None for k in SLOT.findall(m.group(1))) else m.group(1)
    return SLOT.sub(lambda m: str(values[m.group(1)]), OPTIONAL.sub(keep, text))


def render(rng, person: Person, split: str) -> tuple[str, dict]:
    """Write `person` as text in one of the split's templates; also return what was chosen (for tests)."""
    t = rng.choice(TEMPLATES[split])
    info = {"template": t.id, "date_format": None, "date_text": None, "distractors": [], "steal": {}}
    age_words = person.age is not None and rng.random() < 0.2
    values = {"name": person.name, "age_d": person.age, "city": person.city, "email": person.email,
              "age": age_in_words(person.age) if age_words else person.age,
              "date": None, "noise": None, "ref": rng.randint(1000, 99999),
              "She": "She" if person.she else "He", "she": "she" if person.she else "he",
              "Her": "Her" if person.she else "His", "her": "her" if person.she else "his",
              "him": "her" if person.she else "him"}
    if person.signup:
        info["date_format"] = pick_date_format(rng, person.signup, t.dates)
        info["date_text"] = values["date"] = write_date(person.signup, info["date_format"])
    noises = []
    if "{noise}" in t.text:
        how_many = rng.choices([0, 1, 2], weights=[35, 48, 17])[0]
        for kind in rng.sample(DISTRACTOR_KINDS, how_many):
            voices, steal = distractor(rng, kind, person, split)
            noises.append(voices[t.voice])
            info["distractors"].append(kind)
            info["steal"].update(steal)
        values["noise"] = " ".join(noises) or None
    if t.fill:
        for slot in ("age", "age_d", "city", "email", "date"):
            if values[slot] is None and rng.random() < 0.35:
                values[slot] = rng.choice(FILLERS)
    if t.sep is None:
        text = fill_in(t.text, values)
    else:
        parts, movable = [], []  # a form gets one line (or part) per distractor
        for part in t.text.split(t.sep):
            for p in [part.replace("{noise}", x) for x in noises] if "{noise}" in part else [part]:
                if "{noise}" in part or set(SLOT.findall(p)) & FIELD_SLOTS:
                    movable.append(len(parts))
                parts.append(p)
        if t.shuffle:  # the header and other fixed parts stay where they are
            for i, part in zip(movable, rng.sample([parts[i] for i in movable], len(movable)), strict=True):
                parts[i] = part
        text = t.sep.join(filter(None, (fill_in(p, values).strip() for p in parts)))
    # The target is built from the record, so every field it holds must be readable in the text.
    age_shown = values["age" if "{age}" in t.text else "age_d"] if person.age is not None else None
    for shown in (person.name, age_shown, person.city, person.email, info["date_text"]):
        assert shown is None or str(shown) in text, (t.id, shown, text)
    return text, info


@dataclass
class Example:
    text: str
    target: dict
    info: dict  # how the text was made: template, date format, distractors (tests read this)


def make_examples(rng, split: str, n: int, avoid: set = frozenset()) -> list[Example]:
    """n examples with distinct texts, none of which is in `avoid`."""
    examples, seen = [], set(avoid)
    while len(examples) < n:
        person = make_person(rng, split)
        text, info = render(rng, person, split)
        if text not in seen:
            seen.add(text)
            examples.append(Example(text, person.target(), info))
    return examples


def dumps(target: dict) -> str:
    return json.dumps(target, ensure_ascii=False)


# --- Wrong answers for preference pairs: each is a mistake a base model really makes.
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
            field = rng.choice(sorted(ex.info["steal"]))
            wrong[field] = ex.info["steal"][field]
        else:  # a null filled in with something plausible
            field = rng.choice([k for k in FIELDS if t[k] is None])
            first, last = t["name"].split()[0], t["name"].split()[-1]
            wrong[field] = {"age": rng.randint(25, 45), "city": rng.choice(CITIES),
                            "email": make_email(rng, first, last),
                            "signup_date": random_date(rng, FIRST_SIGNUP, LAST_SIGNUP).isoformat()}[field]
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


def build(seed: int = 0, sizes: dict | None = None) -> dict[str, list[Example]]:
    """All four splits. Each has its own random stream, so resizing one split leaves the others alone."""
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
    assert not train_texts & {ex.text for ex in built["sft_eval"]}, "eval shares a text with train"
    assert not train_texts & {ex.text for ex in built["rl_prompts"]}, "an RL prompt copies a train text"
    return built


def to_record(split: str, ex: Example) -> dict:
    """The JSON line for one example, in the format TRL reads for that kind of training."""
    answer = {"role": "assistant", "content": dumps(ex.target)}
    if split in ("sft_train", "sft_eval"):
        return {"messages": prompt_messages(ex.text) + [answer]}
    if split == "preference":
        return {"prompt": prompt_messages(ex.text), "chosen": [answer],
                "rejected": [{"role": "assistant", "content": ex.info["rejected"]}], "error": ex.info["error"]}
    return {"prompt": prompt_messages(ex.text), "answer": dumps(ex.target)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    for flag, split in (("--train", "sft_train"), ("--eval", "sft_eval"), ("--preference", "preference"),
                        ("--rl", "rl_prompts")):
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
