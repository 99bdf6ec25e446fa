"""Reading the vocabulary. The tables (names, cities, e-mail parts, phrasings, the lines of frames, prose and
describe sentences) live in data/vocab/*.json, one file per kind, each opening with an "about" that says what it
holds; each module reads the files it uses with vocab(). Order counts: draws pick by position, so the same lists
in the same order give the same bytes, and any edit to a list changes the data (then rerun
python3 data/generate.py and commit what it writes)."""

import json
from pathlib import Path

VOCAB_DIR = Path(__file__).resolve().parent.parent / "vocab"  # data/vocab
VOCAB_READ = []  # the files read, in order (a test checks that no file in data/vocab/ goes unread)


def vocab(name: str, *tables: str) -> list:
    """The named tables of data/vocab/<name>.json, in the order asked. The file must hold exactly these (and
    its "about"), so a table added or left behind there is an error here, not a silent no-op."""
    with open(VOCAB_DIR / f"{name}.json", encoding="utf-8") as f:
        data = json.load(f)
    if set(data) != {"about", *tables}:
        raise ValueError(f"{f.name} holds {sorted(data)}, but the generator reads {sorted(['about', *tables])}")
    VOCAB_READ.append(name)
    return [data[table] for table in tables]
