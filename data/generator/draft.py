"""The phrasings (the many ways to say each fact) and the Draft that writes with them: one text being written
about one person. A frame (generator/frames.py) decides the shape of the text and asks its draft for sentences,
fragments or label/value pairs; the draft records every surface it showed, which generate.py's self-check
reads back."""

import re

from ftlab.task import FIELDS
from generator.distractors import DISTRACTOR_KINDS, Fact, distractor
from generator.people import CITY_POOL, CULTURES, HELD, JOBS, Person, held_out, make_email, pick, write_city
from generator.settings import N_DISTRACTORS, P_HELD_OUT
from generator.spelling import age_in_words, ordinal, write_date, write_email
from generator.vocab import vocab

# ====================================================================================================
# Phrasings: many ways to say each fact, in the first person ("i"), about someone ("they"), in chat
# (first person plus chat-only ones), and as fragments for bullets and one-line cards. A phrasing may say
# several facts at once. {age} is digits or words, {age_d} digits; {city} may carry a country, {city0} not;
# {email_p} is always the plain address. Phrasings, labels and questions are split like every pool.
# ====================================================================================================
# Sentences per voice (chat also uses the first person's), fragments, form labels, column keys, Q&A
# questions, and what a form shows for a missing value: all in data/vocab/phrasings.json.
SAY, FRAG, LABELS, KEYS, QUESTIONS, FILLERS = vocab(
    "phrasings", "say", "frag", "labels", "keys", "questions", "fillers")
SAY["chat"] = SAY["i"] + SAY.pop("chat_only")
SLOT_FIELD = {"name": "name", "age": "age", "age_d": "age", "age_nth": "age", "city": "city", "city0": "city",
              "email": "email", "email_p": "email", "date": "signup_date"}
SLOT = re.compile(r"\{(\w+)\}")


def fields_of(phrase: str) -> set:
    return {SLOT_FIELD[s] for s in SLOT.findall(phrase) if s in SLOT_FIELD}


# ====================================================================================================
# A draft: one text being written. It knows how each field is spelled this time, writes phrasings and
# label/value pairs, places the distractors, and records every surface it showed (for the self-check).
# ====================================================================================================
class Draft:
    def __init__(self, rng, split: str, p: Person):
        self.rng, self.split, self.p, self.lower, self.shown = rng, split, p, False, []
        self.fields = [f for f, v in zip(FIELDS, (p.name, p.age, p.city, p.email, p.signup), strict=True) if v]
        self.info = {"frame": None, "family": None, "phrasings": [], "date_format": None, "date_text": None,
                     "email_form": None, "email_text": None, "city_held_out": bool(p.city and p.city.name in HELD),
                     "distractors": ["title"] if p.title else [], "steal": {}}
        self.surface = {"name": f"{p.title} {p.name}" if p.title else p.name}
        if p.age:
            self.surface.update(age=age_in_words(p.age) if rng.random() < 0.25 else str(p.age), age_d=str(p.age),
                                age_nth=ordinal(p.age))
        if p.city:
            self.city, self.surface["city"] = write_city(rng, p.city)
            self.surface["city0"] = self.city
        if p.email:
            self.info["email_form"], self.surface["email"] = write_email(rng, p.email)
            self.info["email_text"], self.surface["email_p"] = self.surface["email"], p.email
        if p.signup:
            self.info["date_format"], self.surface["date"] = write_date(rng, p.signup)
            self.info["date_text"] = self.surface["date"]
        kinds = rng.sample(DISTRACTOR_KINDS[:-1], rng.choices(*N_DISTRACTORS)[0])
        self.pending = [distractor(self, kind) for kind in kinds]

    # --- values
    def show(self, slot: str) -> str:
        self.shown.append((SLOT_FIELD[slot], self.surface[slot]))
        return self.surface[slot]

    def extra(self, slot: str) -> str:
        she = self.p.she
        if slot == "other_city":  # "moved from X to Y": a distractor and the real value together
            c = self.other_city()
            self.info["distractors"].append("place")
            self.info["steal"]["city"] = c
            return c
        return {"She": "She" if she else "He", "she": "she" if she else "he", "Her": "Her" if she else "His",
                "her": "her" if she else "his", "him": "her" if she else "him", "job": self.rng.choice(JOBS),
                "n": str(self.rng.randint(2, 15))}[slot]

    def other_city(self) -> str:
        pool = CITY_POOL["train"] + (CITY_POOL["eval_only"] if self.split == "eval" else [])
        return self.rng.choice([c.name for c in pool if not self.p.city or c.name != self.p.city.name])

    def other_given(self, gender: str | None = None) -> str:
        gender = gender or self.rng.choice(["female", "male"])
        return pick(self.rng, self.split, self.rng.choice(sorted(CULTURES)), gender)

    def other_name(self) -> str:
        culture = self.rng.choice(sorted(CULTURES))
        return f"{self.other_given()} {pick(self.rng, self.split, culture, 'family')}"

    def other_email(self) -> str:
        while (email := make_email(self.rng, self.other_given(), self.other_name().split()[-1])) == self.p.email:
            pass
        return email

    # --- phrasings
    def choose(self, options: list[str]) -> str:
        """Train never sees a held-out option; eval prefers them."""
        seen, held = [o for o in options if not held_out(o)], [o for o in options if held_out(o)]
        if self.split == "eval" and held and (not seen or self.rng.random() < P_HELD_OUT):
            seen = held
        choice = self.rng.choice(seen)
        self.info["phrasings"].append(choice)
        return choice

    def fill(self, phrase: str) -> str:
        text = SLOT.sub(lambda m: self.show(m[1]) if m[1] in SLOT_FIELD else self.extra(m[1]), phrase)
        return re.sub(r"\b([Aa]) (?=(8|18|11|eight)[\w-]*-year-old)", r"\1n ", text)  # an 80-year-old

    def take(self, kind: str | None = None) -> list[Fact]:
        """Hand the pending distractors (or those of one kind) to a frame, which must place them."""
        taken = [f for f in self.pending if kind in (None, f.kind)]
        self.pending = [f for f in self.pending if f not in taken]
        self.info["distractors"] += [f.kind for f in taken]
        for f in taken:
            self.info["steal"].update(f.steal)
        return taken

    def sentences(self, voice: str, fields=None) -> list[str]:
        """Each field said once (in random order, the name first when speaking about someone), plus distractors."""
        remaining, out = set(self.fields if fields is None else fields), []
        while remaining:
            f = "name" if voice == "they" and "name" in remaining else self.rng.choice(sorted(remaining))
            phrase = self.choose([s for s in SAY[voice] if f in fields_of(s) and fields_of(s) <= remaining])
            out.append(self.fill(phrase))
            remaining -= fields_of(phrase)
        for fact in self.take():
            out.insert(self.rng.randint(1 if voice == "they" and out else 0, len(out)),
                       fact.i if voice in ("i", "chat") else fact.they)
        return out

    def frag(self, f: str) -> str:
        return self.fill(self.choose(FRAG[f]))

    def pairs(self, keys: dict, fields=None, fillers: float = 0.3) -> list[tuple[str, str]]:
        """(label, value) for each field, name first most often; a missing field sometimes shows as 'n/a'."""
        order = [f for f in FIELDS if f in (self.fields if fields is None else fields)]
        self.rng.shuffle(order)
        if "name" in order and self.rng.random() < 0.7:
            order.remove("name")
            order.insert(0, "name")
        slot = {"name": "name", "age": "age_d", "city": "city", "email": "email", "signup_date": "date"}
        out = [(self.choose(keys[f]), self.show(slot[f])) for f in order]
        for f in FIELDS[1:]:
            if f not in self.fields and self.rng.random() < fillers:
                out.insert(self.rng.randint(1, len(out)), (self.choose(keys[f]), self.rng.choice(FILLERS)))
        snake = keys is KEYS
        for fact in self.take():
            label = re.sub(r"\W+", "_", fact.pair[0].lower()).strip("_") if snake else fact.pair[0]
            out.insert(self.rng.randint(1, len(out)), (label, fact.pair[1]))
        return out
