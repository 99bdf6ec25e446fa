"""Distractors: true facts about something else (a relative's age, an office city, a cc'd address, another
date, a phone or order number), each in the first person, about someone, and as a label and value, and what a
careless model might copy from them ("steal"), which the preference data uses as a wrong answer. A Draft
(generator/draft.py) asks for them and places them in its text."""

from dataclasses import dataclass, field
from datetime import date, timedelta

from generator.people import FEMALE_RELATIVES, HANDLES, MALE_RELATIVES, OLDER, PHONES, RELATIVES, YOUNGER
from generator.settings import FIRST_SIGNUP, TODAY
from generator.spelling import MONTHS, TENS, ascii_lower, fill_digits, ordinal, random_date, write_date


@dataclass
class Fact:
    kind: str
    i: str
    they: str
    pair: tuple
    steal: dict = field(default_factory=dict)


DISTRACTOR_KINDS = ["relative", "colleague", "contact", "order", "money", "other_date", "place", "other_person",
                    "age_hint", "title"]


def relative_age(rng, rel: str, age: int | None) -> int:
    base = age or rng.randint(30, 60)
    if rel in OLDER and base + 20 <= 95:
        return rng.randint(base + 20, min(95, base + 38))
    if rel in YOUNGER and base >= 22:
        return rng.randint(max(1, base - 40), base - 18)
    return rng.choice([a for a in range(max(18, base - 12), min(90, base + 12) + 1) if a != age])


def distractor(d, kind: str) -> Fact:
    rng, p = d.rng, d.p
    She, Her, her, him = d.extra("She"), d.extra("Her"), d.extra("her"), d.extra("him")
    if kind == "relative":
        rel, city = rng.choice(RELATIVES), d.other_city()
        who = d.other_given("female" if rel in FEMALE_RELATIVES else "male" if rel in MALE_RELATIVES else None)
        age, email, kid = relative_age(rng, rel, p.age), d.other_email(), rng.randint(2, 14)
        return rng.choice([
            Fact(kind, f"My {rel}, {age}, lives in {city}.", f"{Her} {rel} ({age}) lives in {city}.",
                 ("Emergency contact", f"{who} ({rel}), {age}, {city}"), {"age": age, "city": city}),
            Fact(kind, f"My {rel} is {age} and wants an account too.", f"{Her} {rel}, aged {age}, may join as well.",
                 ("Household member", f"{rel}, {age}"), {"age": age}),
            Fact(kind, f"My {rel} lives in {city}.", f"{Her} {rel} is based in {city}.",
                 ("Billing contact", f"{who}, {city}"), {"city": city}),
            Fact(kind, f"I'm visiting my {rel} in {city} next month.", f"{She} is visiting {her} {rel} in {city}.",
                 ("Next of kin", f"{who} ({rel}), {city}"), {"city": city}),
            Fact(kind, f"My {rel} uses {email}, please don't mix us up.",
                 f"{Her} {rel}'s address {email} is also on file.",
                 ("Family member email", email), {"email": email}),
            Fact(kind, f"My kids are {kid} and {kid + 3}.", f"{She} has two kids, {kid} and {kid + 3}.",
                 ("Children", f"2 (ages {kid} and {kid + 3})"), {"age": kid + 3})])
    if kind == "colleague":
        who, email = d.other_name(), d.other_email()
        return rng.choice([
            Fact(kind, f"Please cc my manager at {email}.", f"{Her} manager ({email}) is in cc.", ("CC", email),
                 {"email": email}),
            Fact(kind, f"My colleague {who} ({email}) is in cc.", f"Copying in {her} colleague {who}, {email}.",
                 ("CC", f"{who} <{email}>"), {"email": email, "name": who}),
            Fact(kind, f"My partner uses {email}, so don't mix us up.",
                 f"{Her} spouse's address ({email}) is on file too.",
                 ("Partner email", email), {"email": email}),
            Fact(kind, f"Invoices go to our finance team, {email}.", f"Invoices go to {her} employer: {email}.",
                 ("Billing email", email), {"email": email})])
    if kind == "contact":  # ways to reach them that are not an e-mail address
        phone, handle = fill_digits(rng, rng.choice(PHONES)), f"@{rng.choice(HANDLES)}{rng.randint(1, 99)}"
        site = f"www.{ascii_lower(p.family).replace('-', '')}{rng.choice(['.com', '-studio.com', '.design', '.net'])}"
        return rng.choice([Fact(kind, f"My number is {phone}.", f"Callback number: {phone}.", ("Phone", phone)),
                           Fact(kind, f"I'm {handle} on Instagram.", f"{Her} Instagram is {handle}.",
                                ("Instagram", handle)),
                           Fact(kind, f"My portfolio is at {site}.", f"{Her} website: {site}.", ("Website", site)),
                           Fact(kind, f"You can text me at {phone}.", f"{She} left {her} number, {phone}.",
                                ("Mobile", phone)),
                           Fact(kind, f"Call me on {phone} after 6.", f"Best reached on {phone}.", ("Tel", phone))])
    if kind == "order":
        n = rng.randint(10000, 99999)
        ref = rng.choice([f"#{n}", f"ORD-{rng.randint(2019, 2026)}-{n}", f"INV-{n:06d}", f"CS-{n % 9000 + 1000}"])
        return rng.choice([Fact(kind, f"This is about order {ref}.", f"Ticket refers to order {ref}.", ("Order", ref)),
                           Fact(kind, f"My reference is {ref}.", f"{She} quoted reference {ref}.", ("Reference", ref)),
                           Fact(kind, f"Invoice {ref} is still open.", f"Invoice {ref} is unpaid.", ("Invoice", ref))])
    if kind == "money":
        q = rng.randint(2, 40)
        cents = rng.choice(["00", "99", "50"])
        price = rng.choice(["€", "$", "£", "R$ ", "₹", "CHF "]) + f"{rng.randint(5, 499)}.{cents}"
        plan = rng.choice(["Basic", "Pro", "Family", "Business", "Premium", "Student"])
        return rng.choice([
            Fact(kind, f"I paid {price} for {q} seats.", f"{She} paid {price} for {q} seats.", ("Amount", price)),
            Fact(kind, f"We need {q} licences on the {plan} plan.", f"{She} wants {q} licences ({plan}).",
                 ("Plan", f"{plan}, {q} seats")),
            Fact(kind, f"The {plan} plan at {price} a month is too much.",
                 f"{She} finds {plan} at {price}/month too pricey.",
                 ("Monthly price", price))])
    if kind == "other_date":
        what = rng.choice(["last_login", "renewal", "delivery", "appointment", "order", "trial", "birthday",
                           "born", "tenure"] + ([] if p.signup else ["partial"] * 3))
        if what == "partial":  # a signup without a full date: the signup_date stays null
            y, m = rng.randint(2010, 2025), rng.choice(MONTHS)
            i, they, label, value = rng.choice([
                (f"I've been a member since {y}.", f"Member since {y}.", "Member since", str(y)),
                (f"I joined in {m} {y}.", f"{She} joined in {m} {y}.", "Joined", f"{m} {y}"),
                (f"I signed up back in {y}.", f"{She} signed up in {y}.", "Signed up", str(y)),
                (f"I've been a customer since {m[:3]} {y}.", f"Customer since {m[:3]} {y}.", "Customer since",
                 f"{m[:3]} {y}")])
            return Fact(kind, i, they, (label, value), {"signup_date": f"{y}-{MONTHS.index(m) + 1:02d}-01"})
        if what == "tenure":  # a duration, not a date (it agrees with the signup date when there is one)
            n = max(1, TODAY.year - p.signup.year) if p.signup else rng.randint(2, 12)
            return Fact(kind, f"I've been a customer for {n} years.", f"{She} has been with us for {n} years.",
                        ("Customer for", f"{n} years"))
        if what == "birthday":  # no year, so not a full date, but a date
            m, dd = rng.choice(MONTHS), rng.randint(1, 28)
            w = rng.choice([f"{dd} {m}", f"{m} {dd}", f"{m} {ordinal(dd)}"])
            return Fact(kind, f"My birthday is on {w}, by the way.", f"{Her} birthday is {w}.", ("Birthday", w))
        if what == "born":  # a full date of birth agrees with the age, when the text gives one
            age = p.age or rng.randint(18, 80)
            dt = random_date(rng, date(TODAY.year - age - 1, TODAY.month, TODAY.day) + timedelta(days=1),
                             date(TODAY.year - age, TODAY.month, TODAY.day))
            w = write_date(rng, dt)[1]
            return Fact(kind, f"I was born on {w}.", f"{She} was born on {w}.", ("Date of birth", w),
                        {"signup_date": dt.isoformat(), **({} if p.age else {"age": age})})
        start = {"last_login": p.signup or FIRST_SIGNUP, "order": date(2023, 1, 1)}.get(what, TODAY - timedelta(40))
        dt = random_date(rng, start + timedelta(days=1), start + timedelta(days=700))
        w = write_date(rng, dt)[1]
        i, they, label = {
            "last_login": (f"I last logged in on {w}.", f"{She} last logged in on {w}.", "Last login"),
            "renewal": (f"My plan renews on {w}.", f"{Her} plan renews on {w}.", "Renewal date"),
            "delivery": (f"My parcel is due on {w}.", f"Delivery scheduled for {w}.", "Delivery date"),
            "appointment": (f"My appointment is on {w}.", f"{She} has an appointment on {w}.", "Appointment"),
            "order": (f"I placed the order on {w}.", f"{She} ordered on {w}.", "Order date"),
            "trial": (f"My trial ends on {w}.", f"{Her} trial ends {w}.", "Trial ends")}[what]
        return Fact(kind, i, they, (label, w), {"signup_date": dt.isoformat()})
    if kind == "place":  # cities that are not where the person lives: work, a branch, a trip, one they left
        c, y = d.other_city(), rng.randint(2005, 2024)
        i, they, label = rng.choice([
            (f"I work at the {c} office.", f"{She} works out of our {c} office.", "Office"),
            (f"My account is with the {c} branch.", f"Handled by the {c} branch.", "Branch"),
            (f"I'm visiting {c} next week.", f"{She} is visiting {c} this week.", "Travelling to"),
            (f"I moved away from {c} in {y}.", f"{She} left {c} in {y}.", "Previous city"),
            (f"I usually shop at your {c} store.", f"{She} shops at the {c} store.", "Store"),
            (f"I'm flying to {c} on Friday.", f"{She} flies to {c} on Friday.", "Trip"),
            (f"I met your team at the fair in {c}.", f"Met {him} at the {c} trade fair.", "Met at"),
            (f"I commute to {c} for work.", f"{She} commutes to {c} for work.", "Work location")])
        return Fact(kind, i, they, (label, c), {"city": c})
    if kind == "other_person":
        who, age = d.other_name(), relative_age(rng, "friend", p.age)
        return rng.choice([
            Fact(kind, f"I was referred by {who}.", f"{She} was referred by {who}.", ("Referred by", who),
                 {"name": who}),
            Fact(kind, f"My friend {who} ({age}) wants to join too.", f"{Her} friend {who}, {age}, may join too.",
                 ("Friend", f"{who}, {age}"), {"name": who, "age": age}),
            Fact(kind, f"Last time I spoke to {who}.", f"{She} previously spoke to {who}.", ("Previous agent", who),
                 {"name": who})])
    # age_hint: "born in 1987" or "in my forties" is not a stated age (never computed); it agrees with the age
    age = p.age or rng.randint(20, 79)
    y, decade = TODAY.year - age - rng.randint(0, 1), TENS[age // 10][:-1] + "ies"  # twenties
    if not p.age and rng.random() < 0.3:
        return Fact(kind, f"I'm in my {decade}.", f"{She} is in {her} {decade}.",
                    ("Age range", f"{age // 10}0-{age // 10}9"), {"age": age})
    return Fact(kind, f"I was born in {y}.", f"{She} was born in {y}.", ("Year of birth", str(y)),
                {} if p.age else {"age": TODAY.year - y})
