"""Frames: the kinds of text (inbox e-mail, chat, chat log, intro, report, CRM note, booking, form, CSV row,
table, log line, bullets, contact card, signature, Q&A, and four that only eval sees). Each writes a whole text
from a draft, registered in FRAMES with its family and weight; weight 0 = held out for eval."""

import re
from datetime import timedelta

from ftlab.task import FIELDS
from generator.draft import FILLERS, KEYS, LABELS, QUESTIONS, Draft
from generator.people import COMPANIES, JOBS, company_domain
from generator.settings import P_EVAL_FRAME, TODAY
from generator.spelling import random_date, write_date
from generator.vocab import vocab

FRAMES = {}  # name -> (writer, family, weight)


def frame(name: str, family: str, weight: float):
    def register(writer):
        FRAMES[name] = (writer, family, weight)
        return writer
    return register


# What frames write around the facts: reasons for writing (first person, or a note about someone), and
# e-mail greetings, sign-offs and subject lines.
REASONS_I, REASONS_THEY, GREETINGS, SIGNOFFS, SUBJECTS = vocab(
    "frame_lines", "reasons_i", "reasons_they", "greetings", "signoffs", "subjects")


def paragraphs(rng, parts: list[str]) -> str:
    cuts = sorted(rng.sample(range(1, len(parts)), min(len(parts) - 1, rng.randint(0, 2)))) if len(parts) > 1 else []
    return "\n\n".join(" ".join(parts[a:b]) for a, b in zip([0, *cuts], [*cuts, len(parts)], strict=True))


def unstop(sentence: str) -> str:
    """Drop the final full stop, as chats do, but not the one of an initial ("... Hoàng Phương K.")."""
    return re.sub(r"(?<! [A-Z])[.!]$", "", sentence)


def some_time(rng) -> str:
    return f"{rng.randint(7, 22):02d}:{rng.randint(0, 59):02d}"


@frame("email", "email", 3)
def email_frame(d: Draft) -> str:
    rng, fields, head = d.rng, set(d.fields), []
    if rng.random() < 0.75:  # most pasted e-mails keep their headers
        addr = d.show("email_p") if "email" in fields and rng.random() < 0.5 else None
        named = not addr or rng.random() < 0.7
        fields -= {"email"} if addr else set()
        fields -= {"name"} if named else set()
        head.append("From: " + (f"{d.show('name')} <{addr}>" if named and addr else d.show("name") if named else addr))
        head.append(f"To: {rng.choice(['support', 'help', 'hello', 'billing', 'accounts'])}@{company_domain(rng)}")
        head += [f"Cc: {fact.pair[1]}" for fact in d.take("colleague")]  # a colleague is cc'd, not mentioned
        if rng.random() < 0.3:
            head.append(f"Date: {write_date(rng, random_date(rng, TODAY - timedelta(days=90), TODAY), 'weekday')[1]}")
        head.append(f"Subject: {rng.choice(SUBJECTS)}")
    sign_full = "name" in fields and rng.random() < 0.5
    fields -= {"name"} if sign_full else set()
    body = d.sentences("i", fields)
    body.insert(rng.randint(0, len(body)), rng.choice(REASONS_I))
    sign = d.show("name") if sign_full else d.p.given
    text = f"{rng.choice(GREETINGS)}\n\n{paragraphs(rng, body)}\n\n{rng.choice(SIGNOFFS)}\n{sign}"
    return "\n".join(head) + "\n\n" + text if head else text


@frame("chat", "chat", 2)
def chat_frame(d: Draft) -> str:
    rng = d.rng
    parts = d.sentences("chat")
    if rng.random() < 0.5:
        parts = [unstop(p) for p in parts]
    d.lower = rng.random() < 0.4
    opener = rng.choice(["hey!", "hi 👋", "hello", "", "", "yo", "ok so", "hiya", "good evening!"])
    closer = rng.choice(["", "", "thx!", "cheers", "🙏", "ty", "thanks in advance"])
    return " ".join(x for x in [opener, rng.choice([" ", "\n"]).join(parts), closer] if x)


@frame("chat_log", "chat", 1.5)
def chat_log_frame(d: Draft) -> str:
    rng, fields = d.rng, set(d.fields)
    agent = d.other_given()
    agent_label = rng.choice([f"Agent {agent}", f"{agent} (support)", "Support", "Bot"])
    who = d.show("name") if rng.random() < 0.6 else None
    fields -= {"name"} if who else set()
    msgs = d.sentences("chat", fields) or [rng.choice(REASONS_I)]
    who = who or rng.choice(["Customer", "Visitor", "Guest", "You"])
    cut = rng.randint(1, len(msgs))
    lines = [(who, " ".join(msgs[:cut])), (agent_label, rng.choice(["Thanks! Anything else?", "Let me check.",
                                                                    "Could you confirm a few details?"])),
             (who, " ".join(msgs[cut:]))]
    if rng.random() < 0.5:
        lines.insert(0, (agent_label, f"Hi, I'm {agent}. How can I help?"))
    d.lower = rng.random() < 0.3
    minute = rng.randint(7 * 60, 21 * 60)
    return "\n".join(f"[{(minute + 2 * i) // 60:02d}:{(minute + 2 * i) % 60:02d}] {speaker}: {msg}"
                     for i, (speaker, msg) in enumerate(x for x in lines if x[1]))


@frame("intro", "prose", 2)
def intro_frame(d: Draft) -> str:
    rng = d.rng
    opener = rng.choice(["Hello everyone!", "Hi all,", "A bit about me:", "", "Hello!", "Quick intro:"])
    closer = rng.choice(["Looking forward to it!", "Thanks for having me.", "", "", "Happy to help with anything."])
    return " ".join(x for x in [opener, *d.sentences("i"), closer] if x)


@frame("report", "prose", 2)
def report_frame(d: Draft) -> str:
    prefix = d.rng.choice(["", "", "Summary: ", "Notes: ", "Re: account review. ", "Customer profile: "])
    parts = d.sentences("they")
    parts.insert(d.rng.randint(1, len(parts)), d.rng.choice(REASONS_THEY))
    return prefix + " ".join(parts)


@frame("crm_note", "note", 2)
def crm_note_frame(d: Draft) -> str:
    rng, fields = d.rng, set(d.fields)
    n, agent = rng.randint(1000, 99999), d.other_given()
    header = rng.choice([f"CRM note · ticket #{n}", f"Call summary ({agent})", f"Support log #{n}",
                         f"Case CS-{n}", f"Notes, agent {agent}"])
    if rng.random() < 0.5:
        header += rng.choice([" · ", " — ", "\nCustomer: "]) + d.show("name")
        fields.discard("name")
    parts = d.sentences("they", fields) + [rng.choice(REASONS_THEY)]
    return header + "\n" + (" ".join(parts) if rng.random() < 0.5 else "\n".join(f"- {p}" for p in parts))


@frame("booking", "note", 2)
def booking_frame(d: Draft) -> str:
    rng, fields = d.rng, set(d.fields)
    when = random_date(rng, TODAY, TODAY + timedelta(days=120))  # an appointment date, never the signup
    w, at = write_date(rng, when)[1], some_time(rng)
    what = rng.choice([f"table for {rng.randint(2, 8)}", "haircut", "dental check-up", "onboarding call",
                       "property viewing", "yoga class", "car service", "consultation"])
    d.info["distractors"].append("other_date")
    d.info["steal"]["signup_date"] = when.isoformat()
    header = rng.choice([f"📅 {w}, {at} — {what}", f"Booking confirmed: {what} on {w} at {at}.",
                         f"Appointment: {w}, {at} ({what})"])
    if rng.random() < 0.6:
        header += "\n" + rng.choice(["Guest: ", "Booked by: ", "Name: ", "For: "]) + d.show("name")
        fields.discard("name")
    return header + "\n" + " ".join(d.sentences("they", fields))


def cased(rng, label: str) -> str:
    return rng.choices([label, label.lower(), label.upper()], weights=[80, 12, 8])[0]


@frame("form", "structured", 2)
def form_frame(d: Draft) -> str:
    rng = d.rng
    header = rng.choice(["New registration", f"Form submission #{rng.randint(100, 9999)}", "--- signup form ---",
                         "Web form: contact us", "Profile export", "[Typeform] New response", "", ""])
    sep = rng.choice([": ", ": ", ": ", " - ", " = ", ":\t"])
    lines = [f"{cased(rng, k)}{sep}{v}" for k, v in d.pairs(LABELS)]
    return "\n".join(x for x in [header, *lines] if x)


@frame("csv", "structured", 1)
def csv_frame(d: Draft) -> str:
    rng, delim = d.rng, d.rng.choice([",", ",", ";", "\t", "|"])
    pairs = d.pairs(KEYS, fillers=0.5)

    def cell(v):
        return f'"{v}"' if delim in v or '"' in v else v
    head = rng.choice(["", "", "export.csv", f"users_{rng.randint(2019, 2026)}.csv:", "Row from the CRM export:"])
    table = delim.join(k for k, _ in pairs) + "\n" + delim.join(cell(v) for _, v in pairs)
    return f"{head}\n{table}" if head else table


@frame("table", "structured", 1)
def table_frame(d: Draft) -> str:
    pairs = d.pairs(LABELS)
    if d.rng.random() < 0.5:  # one row under a header row
        return "\n".join(["| " + " | ".join(k for k, _ in pairs) + " |", "|" + "---|" * len(pairs),
                          "| " + " | ".join(v for _, v in pairs) + " |"])
    head = d.rng.choice(["| Field | Value |", "| | |", "| Key | Value |"])
    return "\n".join([head, "|---|---|", *(f"| {k} | {v} |" for k, v in pairs)])


@frame("kv_log", "structured", 1)
def kv_log_frame(d: Draft) -> str:
    rng = d.rng
    when = random_date(rng, TODAY - timedelta(days=30), TODAY)  # the log line's own time: not the signup
    event = rng.choice(["profile_update", "login", "password_reset", "export", "sync", "support_ticket"])
    pairs = d.pairs(KEYS, fillers=0.4)
    kv = " ".join(f'{k}="{v}"' if not re.fullmatch(r"[^\s\"]+", v) else f"{k}={v}" for k, v in pairs)
    level = rng.choice(["INFO", "INFO", "DEBUG", "WARN", "info"])
    return f"{when.isoformat()}T{some_time(rng)}:{rng.randint(10, 59)}Z {level} event={event} {kv}"


@frame("bullets", "structured", 1)
def bullets_frame(d: Draft) -> str:
    rng = d.rng
    title = rng.choice(["New member details:", "Customer info", "Profile", "About the applicant:", "Details:", ""])
    mark = rng.choice(["- ", "* ", "• ", "– "])
    if rng.random() < 0.5:
        lines = [f"{k}: {v}" for k, v in d.pairs(LABELS)]
    else:
        order = [f for f in FIELDS[1:] if f in d.fields]
        rng.shuffle(order)
        lines = [d.show("name")] + [d.frag(f) for f in order] + [f"{f.pair[0]}: {f.pair[1]}" for f in d.take()]
    return "\n".join(x for x in [title, *(mark + line for line in lines)] if x)


@frame("card", "compact", 2)
def card_frame(d: Draft) -> str:
    """One line: 'Contact: Ana Ruiz ana.ruiz@gmail.com, Porto.'"""
    rng = d.rng
    order = [f for f in FIELDS[1:] if f in d.fields]
    rng.shuffle(order)
    bits = [d.frag(f) for f in order]
    others = [f"{f.pair[0].lower()} {f.pair[1]}" for f in d.take()]  # after the person's own facts: no doubt whose
    prefix = rng.choice(["Contact:", "Customer:", "Lead:", "New member:", "Guest:", "Attendee:", "", "", "👤"])
    seps = [rng.choice([", ", " · ", " | ", " – ", "; "]) for _ in bits]
    if seps and rng.random() < 0.3:  # "Ana Ruiz ana@x.com, Porto": a bare space only right after the name
        seps[0] = " "
    line = d.show("name") + "".join(sep + b for sep, b in zip(seps, bits, strict=True))
    line += "".join(rng.choice([" | ", "; ", " · "]) + b for b in others)
    return (f"{prefix} {line}" if prefix else line) + rng.choice([".", "", ""])


@frame("signature", "compact", 2)
def signature_frame(d: Draft) -> str:
    rng = d.rng
    block = [f for f in ("city", "email") if f in d.fields and rng.random() < 0.7]
    body = [rng.choice(REASONS_I)] + d.sentences("i", [f for f in d.fields if f not in block and f != "name"])
    lines, company = [d.show("name")], rng.random() < 0.5
    if company:  # then a bare city line could be the company's: say whose it is
        job = rng.choice(JOBS)
        lines.append(f"{job[0].upper()}{job[1:]} · {rng.choice(COMPANIES).title()}")
    if "city" in block:
        lines.append(d.fill(d.choose(["Based in {city}", "Home: {city}", "Lives in {city}"] if company else
                                     ["📍 {city}", "{city}", "Based in {city}", "Home: {city}"])))
    if "email" in block:
        lines.append(d.fill(d.choose(["✉ {email}", "E: {email}", "{email}", "Email: {email}"])))
    sep = rng.choice(["--", "—", "Best,", "Thanks,", "Regards,"])
    return " ".join(body) + f"\n\n{sep}\n" + "\n".join(lines)


@frame("qa", "structured", 1)
def qa_frame(d: Draft) -> str:
    rng, style = d.rng, d.rng.randrange(3)
    order = list(FIELDS)
    rng.shuffle(order)
    slot = {"name": "name", "age": "age", "city": "city", "email": "email", "signup_date": "date"}
    qa = []
    for f in order:
        if f in d.fields:
            answer = rng.choice(["{}", "{}", "It's {}.", "Sure: {}"]).format("{" + slot[f] + "}")  # "It's {city}."
            qa.append((d.choose(QUESTIONS[f]), d.fill(answer)))
        elif rng.random() < 0.5:
            qa.append((d.choose(QUESTIONS[f]), rng.choice(["n/a", "Rather not say.", "-", "skip", "(no answer)"])))
    qa += [(f"{fact.pair[0]}?", fact.pair[1]) for fact in d.take()]
    fmt = ["Q: {}\nA: {}", "{} {}", "> {}\n{}"][style]
    return "\n".join(fmt.format(q, a) for q, a in qa)


# --- Held out: frames train never sees, so the eval score measures transfer to new shapes.
@frame("voicemail", "chat", 0)
def voicemail_frame(d: Draft) -> str:
    rng = d.rng
    parts = [unstop(p) + rng.choice([",", "...", ", um,", ", uh", ""]) for p in d.sentences("chat")]
    d.lower = rng.random() < 0.5
    return f"Voicemail (0:{rng.randint(12, 59)}), transcript: " + " ".join(parts)


@frame("yaml", "structured", 0)
def yaml_frame(d: Draft) -> str:
    lines = [f"  {k}: {v if v not in FILLERS else '~'}" for k, v in d.pairs(KEYS)]
    return d.rng.choice(["user:", "customer:", "profile:"]) + "\n" + "\n".join(lines)


@frame("review", "prose", 0)
def review_frame(d: Draft) -> str:
    rng = d.rng
    stars = "★" * (k := rng.randint(2, 5)) + "☆" * (5 - k)
    body = d.sentences("i", [f for f in d.fields if f != "name"])
    body.insert(rng.randint(0, len(body)), rng.choice(["Great service overall.", "Support was slow this time.",
                                                       "Does what it says."]))
    title = rng.choice(["Solid app", "Mixed feelings", "Love it"])
    return f"{stars} {title}\n" + " ".join(body) + f"\n— {d.show('name')}"


@frame("handover", "note", 0)
def handover_frame(d: Draft) -> str:
    rng = d.rng
    parts = d.sentences("they") + [rng.choice(REASONS_THEY)]
    return rng.choice(["Shift handover:", "Handover notes (night shift)", "For tomorrow:"]) + "\n" + "\n".join(
        f"• {p}" for p in parts)


def pick_frame(rng, split: str) -> str:
    if split == "eval" and rng.random() < P_EVAL_FRAME:
        return rng.choice([name for name, (_, _, w) in FRAMES.items() if not w])
    names = [name for name, (_, _, w) in FRAMES.items() if w]
    return rng.choices(names, weights=[FRAMES[n][2] for n in names])[0]
