"""The numbers that shape the data: how often a field is left out, how many distractors a text carries,
how often eval prefers what train never saw, and the calendar the dates are drawn from. Any change here
changes the generated files (then rerun python3 data/generate.py and commit what it writes)."""

from datetime import date

P_MISSING = 0.22  # each field but the name is left out this often (the same in every frame)
P_ONLY_NAME = 0.03  # and sometimes the text says nothing but the name: ~25% null per field in all
P_OBFUSCATED = 0.08  # "ana dot ruiz at gmail dot com"
N_DISTRACTORS = ([0, 1, 2, 3], [48, 32, 15, 5])  # how many facts about something else a text carries
P_HELD_OUT = 0.5  # in eval, how often a held-out city, phrasing or label is preferred to a train one
P_EVAL_FRAME = 0.4  # and how often the eval text uses a frame train never saw
FIRST_SIGNUP, LAST_SIGNUP = date(2010, 1, 1), date(2026, 6, 30)
TODAY = date(2026, 7, 1)  # birth years in distractors agree with the person's age as of this day
