"""Every number of the course's "What to expect" blocks and its table, written from one file of measured results.

    python benchmarks/course_pages.py            # rewrite every generated block from benchmarks/course_results.json
    python benchmarks/course_pages.py --check    # exit 1 and name each block that differs from what it would write

`make course` runs every lesson's default command into runs/course/ (benchmarks/course.py); `python
benchmarks/course.py --table_only --publish` copies what those runs measured (their metrics.json files, without
the per-step log) into benchmarks/course_results.json and runs this script. A page holds a generated block between

    <!-- numbers: NAME -->
    <!-- /numbers -->

where NAME is a technique of the course run (00_prompting, 02_sft, ...), NAME/fields (that run's accuracy per
field after training), `course-table` (the table of every run) or `course-times` (each lesson's wall time). Edit the data or this script, never the text between the markers:
tests/test_readmes.py fails when a block differs from what this script writes.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "course_results.json"
BLOCK = re.compile(r"(<!-- numbers: (?P<name>[\w/-]+) -->\n)(?P<body>.*?)(<!-- /numbers -->)", re.DOTALL)
# The pages a lesson's course runs belong to, for COURSE.md's times.
LESSON_OF = {"03_dpo": "03_rlhf", "03_grpo": "03_rlhf", "08_qat": "08_quantization"}


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):d} s"


def exact(scores: dict | None, name: str) -> str:
    return pct(scores[name]["exact_match"]) if scores and name in scores else "-"


def valid(scores: dict | None) -> str:
    if not scores:
        return "-"
    return " / ".join(pct(scores[s]["valid_json"], 0) for s in ("synthetic", "handwritten") if s in scores)


def probe(scores: dict | None) -> str:
    return pct(scores["probe"]["correct"], 0) if scores and "probe" in scores else "-"


def machine(data: dict) -> str:
    m = data["machine"]
    device = m["gpu"] or f"{m['cpu']}, {m['cores']} cores, no GPU"
    return f"{device}; torch {m['torch']}"


def scores_table(rows: list[tuple[str, dict | None]], probe_column: bool = True) -> list[str]:
    n = next((s for _, s in rows if s), {})
    synthetic, handwritten = (n.get(k, {}).get("n", "?") for k in ("synthetic", "handwritten"))
    header = f"| | synthetic exact ({synthetic}) | hand-written exact ({handwritten}) | valid JSON (synthetic / hand-written) |"
    lines = [header + (" general questions right (24) |" if probe_column else ""),
             "|---|---|---|---|" + ("---|" if probe_column else "")]
    for label, s in rows:
        lines.append(f"| {label} | {exact(s, 'synthetic')} | {exact(s, 'handwritten')} | {valid(s)} |"
                     + (f" {probe(s)} |" if probe_column else ""))
    return lines


def command_line(run: dict) -> str:
    return " ".join(run["command"])


def steps(run: dict) -> int | None:
    """The run's optimizer steps: max_steps from its command, else from its config file."""
    import yaml

    command = run["command"]
    if "--max_steps" in command:
        return int(command[command.index("--max_steps") + 1])
    config = yaml.safe_load((ROOT / command[command.index("--config") + 1]).read_text(encoding="utf-8"))
    return config.get("max_steps")


def cost_line(run: dict) -> str:
    m = run["metrics"]
    parts = []
    if m.get("train_seconds") is not None:
        n = steps(run)
        per_step = f" for {n} steps ({m['train_seconds'] / n:.1f} s a step)" if n else ""
        rate = f", {m['train_tokens_per_second']:,.0f} tokens/s" if m.get("train_tokens_per_second") else ""
        parts.append(f"training {m['train_seconds']} s{per_step}{rate}")
    parts.append(f"the whole run, scoring included, {run['wall_seconds']} s ({minutes(run['wall_seconds'])})")
    if m.get("peak_memory_gib") is not None:
        parts.append(f"peak memory {m['peak_memory_gib']} GiB ({m['memory_device']})")
    if m.get("trainable_parameters") and m.get("total_parameters"):
        parts.append(f"{m['trainable_parameters'] / 1e6:.1f}M of {m['total_parameters'] / 1e6:.1f}M parameters "
                     f"trained ({m['trainable_parameters'] / m['total_parameters']:.1%})")
    return "; ".join(parts) + "."


def prompting_block(run: dict) -> list[str]:
    rows = run["metrics"]["rows"]
    sets = list(rows[0]["scores"])
    lines = ["| shots | decoding | prompt tokens | " + " | ".join(
        f"{s} {w}" for s in sets for w in ("valid JSON", "exact", "fields right")) + " | seconds |",
             "|" + "---|" * (4 + 3 * len(sets))]
    for row in rows:
        cells = [str(row["shots"]), row["decoding"], str(row["prompt_tokens"])]
        for s in sets:
            score = row["scores"][s]
            cells += [pct(score["valid_json"], 0), pct(score["exact_match"]),
                      pct(sum(score["fields"].values()) / len(score["fields"]), 0)]
        lines.append("| " + " | ".join(cells + [str(row["seconds"])]) + " |")
    return lines + ["", (f"The whole run: {run['wall_seconds']} s ({minutes(run['wall_seconds'])}). \"fields right\" is "
                    "the mean over the five fields of the share of answers with that field right.")]


def technique_block(run: dict, data: dict) -> str:
    """One lesson's "What to expect" numbers: the command `make course` ran, the scores before and after, the cost."""
    m = run["metrics"]
    lines = [f"Measured by `make course` ({machine(data)}):", "", "```bash", command_line(run), "```", ""]
    if run["name"] == "00_prompting":
        return "\n".join(lines + prompting_block(run)) + "\n"
    if run["name"] == "08_qat":
        lines += scores_table([("start model, rounded to int4 (PTQ)", m.get("before")),
                               ("20 steps of plain finetuning, then int4 PTQ", m.get("ptq_after_plain_finetuning")),
                               ("20 steps of QAT, converted to int4", m["after"])], probe_column=False)
    else:
        lines += scores_table([("before training", m.get("before")), ("after training", m["after"])])
    lines += ["", cost_line(run)]
    if "perplexity_after" in m and m.get("perplexity_before") is not None:
        lines += ["", (f"Perplexity on held-out prose: {m['perplexity_before']:.1f} before, {m['perplexity_after']:.1f} "
                      "after.")]
    if pairs := m.get("held_out_pairs"):
        lines += ["", (f"Held-out preference pairs: the trained model puts the chosen answer above the rejected one in "
                      f"{pairs['chosen_above_rejected']} of {pairs['pairs']} (mean margin {pairs['mean_margin']:.2f}).")]
    if "active_parameters_per_token" in m:
        lines += ["", (f"{m['num_experts']} experts, top {m['top_k']}: {m['active_parameters_per_token'] / 1e6:.1f}M of "
                      f"{m['total_parameters_moe'] / 1e6:.1f}M parameters used per token.")]
    if "adapter_mb" in m:
        lines += ["", f"The adapter on disk: {m['adapter_mb']} MB."]
    return "\n".join(lines) + "\n"


def fields_block(run: dict) -> str:
    """Each field's accuracy after training, per eval set: where the exact-match misses come from."""
    after = {s: v for s, v in run["metrics"]["after"].items() if "fields" in v}
    lines = ["| field | " + " | ".join(f"{s} ({v['n']})" for s, v in after.items()) + " |",
             "|---|" + "---|" * len(after)]
    for field in next(iter(after.values()))["fields"]:
        lines.append(f"| {field} | " + " | ".join(pct(v["fields"][field]) for v in after.values()) + " |")
    return "\n".join(lines) + "\n"


def table(runs: list[dict]) -> str:
    """The course table, one row per run: scores before -> after, valid JSON, general questions, times, memory."""
    lines = [("| technique | what | synthetic exact, before -> after | hand-written exact, before -> after | "
              "valid JSON after | general questions, before -> after | train time (s) | whole run (s) | "
              "peak memory (GiB) | trained / total parameters |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        m = r["metrics"]
        after = m["after"]
        low = min(after[s]["valid_json"] for s in ("synthetic", "handwritten") if s in after)
        params = (f"{m['trainable_parameters'] / 1e6:.1f}M / {m['total_parameters'] / 1e6:.1f}M"
                  if m.get("trainable_parameters") and m.get("total_parameters") else "-")
        memory = m.get("peak_memory_gib")
        lines.append(f"| {r['name']} | {r['what']} | {exact(m.get('before'), 'synthetic')} -> "
                     f"{exact(after, 'synthetic')} | {exact(m.get('before'), 'handwritten')} -> "
                     f"{exact(after, 'handwritten')} | {pct(low, 0)} | {probe(m.get('before'))} -> {probe(after)} | "
                     f"{m.get('train_seconds') or '-'} | {r['wall_seconds'] or '-'} | "
                     f"{memory if memory is not None else '-'} | {params} |")
    return "\n".join(lines) + "\n"


def course_table(data: dict) -> str:
    runs = data["techniques"]
    total = sum(r["wall_seconds"] for r in runs)
    return (f"Measured by `make course` ({machine(data)}); the {len(runs)} runs' wall times add up to "
            f"{minutes(total)}.\n\n" + table(runs))


def course_times(data: dict) -> str:
    """COURSE.md: each lesson's course run, its wall time."""
    lines = ["| lesson | run by `make course` | wall time |", "|---|---|---|"]
    for r in data["techniques"]:
        lines.append(f"| {LESSON_OF.get(r['name'], r['name'])} | {r['name']}: {r['what']} | "
                     f"{minutes(r['wall_seconds'])} |")
    return f"Measured by `make course` ({machine(data)}):\n\n" + "\n".join(lines) + "\n"


def blocks(data: dict) -> dict[str, str]:
    """Every block this script writes, by name."""
    out = {"course-table": course_table(data), "course-times": course_times(data)}
    for run in data["techniques"]:
        out[run["name"]] = technique_block(run, data)
        if run["name"] != "00_prompting":
            out[f"{run['name']}/fields"] = fields_block(run)
    return out


def pages() -> list[Path]:
    """The Markdown pages git tracks (a new page holding a block counts once it is added)."""
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in listed.stdout.splitlines()]


def render(text: str, written: dict[str, str], page: Path) -> str:
    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in written:
            raise SystemExit(f"error: {page.relative_to(ROOT)}: no block named {name!r} "
                             f"(known: {', '.join(sorted(written))})")
        return match[1] + written[name] + match[4]
    return BLOCK.sub(fill, text)


def differing(data: dict | None = None) -> list[str]:
    """'page: NAME' for each block that differs from what this script writes."""
    written = blocks(data or json.loads(DATA.read_text(encoding="utf-8")))
    stale = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if render(match[0], written, page) != match[0]:
                stale.append(f"{page.relative_to(ROOT)}: {match['name']}")
    return stale


def write_all(data: dict | None = None) -> list[Path]:
    written = blocks(data or json.loads(DATA.read_text(encoding="utf-8")))
    changed = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = render(text, written, page)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block differs")
    args = parser.parse_args()
    if args.check:
        if stale := differing():
            print("differs from benchmarks/course_results.json (run python benchmarks/course_pages.py):\n  "
                  + "\n  ".join(stale))
            sys.exit(1)
        print("every generated block matches benchmarks/course_results.json")
        return
    changed = write_all()
    print("rewrote " + (", ".join(str(p.relative_to(ROOT)) for p in changed) if changed else "nothing (all current)"))


if __name__ == "__main__":
    main()
