"""The course's two tasks, about the same made-up people, each with its own fixed system prompt.

1. **extract** (every technique folder): free text about a person -> JSON of a fixed schema.
2. **describe** (07_model_merging's second skill): that JSON -> one plain English sentence that states
   every fact it holds, with the sign-up date written out ("March 5, 2021"), and nothing it does not hold.

Finetuning is for *form*: the base model already knows what a name or a date is; what it lacks is the
habit of answering with exactly this JSON (or exactly this kind of sentence) and nothing else. Every
script measures that habit before and after training, with the same prompt, so the techniques can be
compared on the same work. The system prompt says which task a conversation is (`task_of`).
"""

from datetime import date

# The schema: these keys, in this order. A field the text does not mention is null.
FIELDS = ("name", "age", "city", "email", "signup_date")

SYSTEM_PROMPT = (
    "You extract facts about a person from text. Reply with one JSON object and nothing else, "
    'with exactly these keys in this order: "name" (string), "age" (integer or null), '
    '"city" (string or null), "email" (string or null), "signup_date" (string "YYYY-MM-DD" or null). '
    "Use null for anything the text does not say."
)

DESCRIBE_PROMPT = (
    "You describe a person from a JSON record. Reply with one English sentence and nothing else. "
    "State every field that is not null, copying names, cities and e-mail addresses exactly, and write "
    'the signup date in words, like "March 5, 2021". Do not mention null fields or add anything else.'
)

TASKS = {"extract": SYSTEM_PROMPT, "describe": DESCRIBE_PROMPT}

# The same schema as a JSON Schema, for decoding held to it (00_prompting): every key required, in this order, no
# other key. A grammar can force this shape; it cannot force the right values (the lesson's point).
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": ["integer", "null"]},
        "city": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "signup_date": {"anyOf": [{"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}, {"type": "null"}]},
    },
    "required": list(FIELDS),
    "additionalProperties": False,
}

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def prompt_messages(text: str) -> list[dict]:
    """The chat messages that ask the model to extract `text` (system + user turn)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": text},
    ]


def describe_messages(record_json: str) -> list[dict]:
    """The chat messages that ask the model to describe a record (its JSON string, as extraction writes it)."""
    return [
        {"role": "system", "content": DESCRIBE_PROMPT},
        {"role": "user", "content": record_json},
    ]


def task_of(messages: list[dict]) -> str:
    """Which task a conversation is, read from its system prompt ("extract" or "describe")."""
    for task, prompt in TASKS.items():
        if messages and messages[0]["content"] == prompt:
            return task
    raise ValueError("the system prompt is neither task's (ftlab.task.SYSTEM_PROMPT / DESCRIBE_PROMPT)")


def date_in_words(iso: str) -> str:
    """'2021-03-05' -> 'March 5, 2021': how the describe task writes the sign-up date."""
    d = date.fromisoformat(iso)
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"
