"""The one task every technique folder trains on: free text about a person -> JSON of a fixed schema.

Finetuning is for *form*: the base model already knows what a name or a date is; what it lacks is the
habit of answering with exactly this JSON and nothing else. Every script measures that habit before and
after training, with the same prompt, so the techniques can be compared on the same work.
"""

# The schema: these keys, in this order. A field the text does not mention is null.
FIELDS = ("name", "age", "city", "email", "signup_date")

SYSTEM_PROMPT = (
    "You extract facts about a person from text. Reply with one JSON object and nothing else, "
    'with exactly these keys in this order: "name" (string), "age" (integer or null), '
    '"city" (string or null), "email" (string or null), "signup_date" (string "YYYY-MM-DD" or null). '
    "Use null for anything the text does not say."
)


def prompt_messages(text: str) -> list[dict]:
    """The chat messages that ask the model to extract `text` (system + user turn)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": text},
    ]
