"""Register the course's data with LLaMA-Factory: write data/llamafactory/ (dataset_info.json + converted pairs).

LLaMA-Factory reads data through a `dataset_info.json` in its `dataset_dir`: one entry per data set, naming
the file and how its columns map onto LLaMA-Factory's own fields. Our SFT files already have the "sharegpt"
shape it knows (a `messages` list of role/content turns, the system prompt first), so their entries point
at the files in data/ as they are. Only the preference pairs need converting: LLaMA-Factory wants `chosen`
and `rejected` as one message each, ours are one-message lists (TRL's conversational form). The split is
03_rlhf's (`ftlab.data.load_preference`: the last 70 pairs held out), so both libraries train on the same pairs.

    python3 data/to_llamafactory.py      # rewrites data/llamafactory/; a test checks the committed copy is current
"""

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the ftlab package (one folder up) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftlab.data import load_preference

DATA_DIR = Path(__file__).resolve().parent

# How our role/content messages map onto LLaMA-Factory's "sharegpt" format (its default tags are from/value).
TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
        "system_tag": "system"}


def sft_entry(file_name: str) -> dict:
    return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": TAGS}


def pairs_entry(file_name: str) -> dict:
    return {"file_name": file_name, "formatting": "sharegpt", "ranking": True,
            "columns": {"messages": "prompt", "chosen": "chosen", "rejected": "rejected"}, "tags": TAGS}


DATASETS = {  # name (what a YAML's `dataset:` says) -> entry; paths are relative to data/llamafactory/
    "extract_train": sft_entry("../sft_train.jsonl"),
    "extract_eval": sft_entry("../sft_eval.jsonl"),
    "describe_train": sft_entry("../describe_train.jsonl"),
    "describe_eval": sft_entry("../describe_eval.jsonl"),
    "preference_train": pairs_entry("preference_train.jsonl"),
    "preference_eval": pairs_entry("preference_eval.jsonl"),
}


def as_pair(pair: dict) -> dict:
    """One of our preference records with `chosen`/`rejected` as single messages (the `error` label is kept:
    LLaMA-Factory ignores columns it is not told about, and it lets results be read per kind of mistake)."""
    return {"prompt": pair["prompt"], "chosen": pair["chosen"][0], "rejected": pair["rejected"][0],
            "error": pair["error"]}


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    train, held_out = load_preference()
    written = []
    for name, pairs in (("preference_train.jsonl", train), ("preference_eval.jsonl", held_out)):
        path = out / name
        path.write_text("".join(json.dumps(as_pair(p), ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        written.append(path)
    info = out / "dataset_info.json"
    info.write_text(json.dumps(DATASETS, indent=2) + "\n", encoding="utf-8")
    return [info, *written]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "llamafactory", help="folder to write")
    for path in write(parser.parse_args().out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
