"""How a value is written in a text, and read back: dates in 14 forms, ages in digits or words, e-mail
addresses plain or obfuscated, names and cities without their accents. Each writer draws from the random
stream it is given; the readers (read_date, read_age, read_email) are what generate.py's self-check uses to
prove that every gold value can be read back from its text."""

import re
import unicodedata
from datetime import date, timedelta

from generator.settings import P_OBFUSCATED

# Letters without accents: what a text typed on a plain keyboard shows, and what an e-mail address holds.
ASCII = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "ß": "ss", "đ": "d",
                       "Đ": "D", "ı": "i", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D"})


def ascii_fold(s: str) -> str:
    """'Kraków' -> 'Krakow', 'Łukasz' -> 'Lukasz': how a text without accents writes it."""
    return unicodedata.normalize("NFKD", s.translate(ASCII)).encode("ascii", "ignore").decode()


def ascii_lower(s: str) -> str:
    """'Łukasz' -> 'lukasz', "O'Brien" -> 'obrien', 'de la Cruz' -> 'delacruz': as typed into an address."""
    return re.sub(r"[^a-z0-9-]", "", ascii_fold(s).lower())


# Dates: the target is always ISO; the text is not. Slashed day/month forms only when the day is over 12,
# so they cannot be misread; dots always mean day.month.year, so any day goes.
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DATE_FORMATS = ["month_day_year", "day_month_year", "ordinal_of", "month_ordinal", "iso", "slashed_ymd",
                "short_month", "abbr_dot", "dash_mon", "dd_mon_yyyy", "weekday", "dotted_dmy", "slashed_dmy",
                "slashed_mdy"]
NEEDS_DAY_OVER_12 = {"slashed_dmy", "slashed_mdy"}
MONTH_NUMBER = {m[:3].lower(): i for i, m in enumerate(MONTHS, start=1)}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def write_date(rng, d: date, fmt: str | None = None) -> tuple[str, str]:
    """(format, text) for a date; a random format when none is given."""
    fmt = fmt or rng.choice([f for f in DATE_FORMATS if d.day > 12 or f not in NEEDS_DAY_OVER_12])
    month, mon, y, day = MONTHS[d.month - 1], MONTHS[d.month - 1][:3], d.year, d.day
    dot = "" if month == "May" else ("t." if month == "September" and rng.random() < 0.5 else ".")
    comma = rng.choice([",", ""])
    return fmt, {
        "month_day_year": f"{month} {day}, {y}",  # March 5, 2021
        "day_month_year": f"{day} {month} {y}",  # 5 March 2021
        "ordinal_of": f"{rng.choice(['', 'the '])}{ordinal(day)} of {month}, {y}",  # the 5th of March, 2021
        "month_ordinal": f"{month} {ordinal(day)}{comma} {y}",  # March 5th 2021
        "iso": d.isoformat(),  # 2021-03-05
        "slashed_ymd": f"{y}/{d.month:02d}/{day:02d}",  # 2021/03/05
        "short_month": f"{mon} {day}{comma} {y}",  # Mar 5 2021
        "abbr_dot": f"{mon}{dot} {day}, {y}",  # Jan. 5, 2021
        "dash_mon": f"{rng.choice([str(day), f'{day:02d}'])}-{mon}-{y}",  # 5-Mar-2021
        "dd_mon_yyyy": f"{day:02d} {mon} {y}",  # 05 Mar 2021
        "weekday": rng.choice([f"{WEEKDAYS[d.weekday()]}, {month} {day}, {y}",  # Friday, March 5, 2021
                               f"{WEEKDAYS[d.weekday()][:3]} {day} {month} {y}"]),  # Fri 5 March 2021
        "dotted_dmy": rng.choice([f"{day:02d}.{d.month:02d}.{y}", f"{day}.{d.month}.{y}"]),  # 05.03.2021
        "slashed_dmy": f"{day:02d}/{d.month:02d}/{y}",  # 25/03/2021
        "slashed_mdy": f"{d.month:02d}/{day:02d}/{y}",  # 03/25/2021
    }[fmt]


def read_date(text: str) -> date:
    """A written date back to a date: month words, or numbers as Y-M-D, D.M.Y or slashed with the day over 12."""
    words = [w for w in re.findall(r"[A-Za-z]+", text) if len(w) >= 3 and w[:3].lower() in MONTH_NUMBER]
    numbers = re.findall(r"\d+", text)
    year = int(next(n for n in numbers if len(n) == 4))
    rest = [int(n) for n in numbers if len(n) != 4]
    if words:
        return date(year, MONTH_NUMBER[words[0][:3].lower()], rest[0])
    if len(numbers[0]) == 4:
        return date(year, rest[0], rest[1])
    if "." in text:
        return date(year, rest[1], rest[0])
    assert (rest[0] > 12) != (rest[1] > 12), f"ambiguous date {text!r}"
    return date(year, rest[1], rest[0]) if rest[0] > 12 else date(year, rest[0], rest[1])


def random_date(rng, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, max(0, (end - start).days)))


# Ages: digits most often, sometimes words.
UNITS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
TEENS = {18: "eighteen", 19: "nineteen"}


def age_in_words(n: int) -> str:
    """18..99 -> 'thirty-two'."""
    return TEENS.get(n) or TENS[n // 10] + (f"-{UNITS[n % 10]}" if n % 10 else "")


def read_age(text: str) -> int:
    """'34', '34th' or 'thirty-four' -> 34."""
    if text[:2].isdigit():
        return int(text[:2])
    return next(n for n in range(18, 100) if age_in_words(n) == text.lower())


# E-mail addresses: written plain, in <...>, as a mailto: link, or so that spam bots miss them.
def obfuscate(rng, email: str) -> str:
    """Written so that spam bots miss it; the gold stays the normal address."""
    local, domain = email.split("@")
    return rng.choice([
        f"{local.replace('.', ' dot ')} at {domain.replace('.', ' dot ')}",  # ana dot ruiz at gmail dot com
        f"{local} [at] {domain}", f"{local}(at){domain}", f"{local} (at) {domain.replace('.', ' (dot) ')}",
        f"{local} AT {domain.replace('.', ' DOT ')}", f"{local} [at] {domain.replace('.', ' [dot] ')}"])


def read_email(text: str) -> str:
    """An address as written back to the plain address: mailto:, <...>, (at), [dot] and ' at ' undone."""
    t = re.sub(r"^mailto:", "", text.strip()).strip("<>")
    def sign(m):
        return "@" if m[1].lower() == "at" else "."
    t = re.sub(r"\s*[\[(]\s*(at|dot)\s*[\])]\s*", sign, t, flags=re.IGNORECASE)  # [at] (dot)
    return re.sub(r"\s+(at|dot)\s+", sign, t, flags=re.IGNORECASE)  # " at ", " DOT "


def write_email(rng, email: str) -> tuple[str, str]:
    """(form, text): mostly plain, sometimes obfuscated, a mailto: link or in angle brackets."""
    form = rng.choices(["plain", "obfuscated", "mailto", "angle"], weights=[78, 100 * P_OBFUSCATED, 7, 7])[0]
    return form, {"plain": email, "obfuscated": obfuscate(rng, email), "mailto": f"mailto:{email}",
                  "angle": f"<{email}>"}[form]


# Phone numbers: a pattern with # for each digit.
def fill_digits(rng, pattern: str) -> str:
    return re.sub("#", lambda _: str(rng.randint(0, 9)), pattern)
