"""The whole course in one table: every technique's default config on the embedded model, then one table and chart.

    make course                                     # every technique below, then runs/course/course.md and .png
    python benchmarks/course.py --only 02_sft 05_peft_lora    # some of them
    python benchmarks/course.py --table_only        # rebuild the table from what runs/course/ already holds
    python benchmarks/course.py --dry_run           # what would run, and what is complete already
    python benchmarks/course.py --table_only --publish   # make these runs the course's numbers (below)

Each technique runs its folder's script with its default config, as a learner would (nothing is copied
from the scripts), into runs/course/<name>/ (never a learner's own runs/ folders). A run that finished
leaves `course_run.json` with a fingerprint of its command, script and config file; when the fingerprint
still matches, the technique is not run again, so a stopped `make course` goes on where it stopped and a
changed config runs again (a stopped run starts over). A finished run's checkpoints are deleted: nothing here
resumes from them, and the eight would hold about 11 GB. 03's DPO and GRPO and 08's QAT start from the course's
own 02_sft model (the table then shows what each adds on top of SFT), so a new 02_sft run makes them new runs
too. The table is built from each run's metrics.json alone (every script writes the same keys through
ftlab.report). Flags after `--` reach every run (`-- --max_steps 2` for a smoke test).

--publish copies what the runs measured (each metrics.json without its per-step log, the command, the wall time,
the machine) into benchmarks/course_results.json, the one file every lesson's "What to expect" numbers and the
README's course table are written from (benchmarks/course_pages.py); tests/test_readmes.py checks the pages agree.

Its time on the project's 2-core CPU: COURSE.md, "Time on a CPU" (written from the published run).
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import course_pages  # benchmarks/course_pages.py: the pages' numbers, the course table among them

ROOT = Path(__file__).resolve().parent.parent

# (name, script, config, what it teaches). 03's DPO and GRPO, and 08's QAT, start from the course's own 02_sft run:
# the table then shows what each adds on top of SFT. 07 (merging) and 09 (export) train nothing: not in the table.
TECHNIQUES = [
    ("00_prompting", "00_prompting/prompt.py", "00_prompting/config.yaml",
     "no training: zero-shot -> 8 worked examples, decoding held to the JSON Schema"),
    ("01_full_finetuning", "01_full_finetuning/train.py", "01_full_finetuning/config.yaml",
     "continued pre-training on prose, every weight"),
    ("02_sft", "02_sft/train.py", "02_sft/config.yaml", "supervised finetuning, every weight"),
    ("03_dpo", "03_rlhf/train_dpo.py", "03_rlhf/dpo.yaml", "DPO on preference pairs, on top of 02_sft"),
    ("03_grpo", "03_rlhf/train_rl.py", "03_rlhf/rl.yaml", "GRPO with the checked JSON reward, on top of 02_sft"),
    ("04_moe", "04_moe/train.py", "04_moe/config.yaml", "SFT of SmolLM2 upcycled to 4 experts"),
    ("05_peft_lora", "05_peft_lora/train.py", "05_peft_lora/config.yaml", "LoRA r16 on a bf16 base"),
    ("06_qlora", "06_qlora/train.py", "06_qlora/config.yaml", "LoRA r16 on a 4-bit NF4 base"),
    ("08_qat", "08_quantization/train_qat.py", "08_quantization/train_qat.yaml",
     "20 more steps of 02_sft's model, QAT towards int4"),
]
# Runs that start from another technique's output name it here (their config's default points at runs/).
STARTS_FROM = {"03_dpo": "02_sft", "03_grpo": "02_sft", "08_qat": "02_sft"}
# Flags a technique's run adds to its config: GRPO's reward model is a lesson of its own (03_rlhf/README.md), so
# the course uses the reward that needs no training, a program that checks the JSON (RL with verifiable rewards).
FLAGS = {"03_grpo": ["--rewards", "json"]}
# What a run leaves to read: every training script writes metrics.json (ftlab.report); 00 trains nothing and writes
# results.json, one row per prompt and decoding.
RESULT_FILE = {"00_prompting": "results.json"}


def this_machine() -> dict:
    """What the numbers were measured on: the CPU's name and cores, the GPU if torch sees one, torch's version."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__.split("+")[0]}


def fingerprint(command: list[str], script: str, config: str) -> str:
    """What makes a run the same run: its command line and the bytes of its script and config file."""
    digest = hashlib.sha256(json.dumps(command).encode())
    for path in (script, config):
        digest.update((ROOT / path).read_bytes())
    return digest.hexdigest()[:16]


def complete(out: Path, stamp: str) -> bool:
    """Whether `out` holds a finished run with this fingerprint (metrics.json and course_run.json agree)."""
    marker = out / "course_run.json"
    return (out / RESULT_FILE.get(out.name, "metrics.json")).is_file() and marker.is_file() and \
        json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") == stamp


def run_all(names: list[str], root: Path, extra: list[str], dry_run: bool = False) -> list[str]:
    """Run each named technique that is not already complete; return the names that failed."""
    failed = []
    for name, script, config, _ in TECHNIQUES:
        if name not in names:
            continue
        out = root / name
        shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out  # runs/course/..., as a learner types it
        command = [script, "--config", config, "--output_dir", str(shown), "--overwrite_output_dir", "true"]
        upstream = []
        if name in STARTS_FROM:
            start = root / STARTS_FROM[name]
            command += ["--model_name_or_path", str(start.relative_to(ROOT) if start.is_relative_to(ROOT) else start)]
            marker = start / "course_run.json"
            if not marker.is_file():
                if dry_run:
                    print(f"{name}: runs after {STARTS_FROM[name]}, from its model", flush=True)
                else:
                    print(f"{name}: starts from {STARTS_FROM[name]}'s model, which has no finished run in {root}: "
                          f"run both (--only {STARTS_FROM[name]} {name})", flush=True)
                    failed.append(name)
                continue
            upstream = [json.loads(marker.read_text(encoding="utf-8"))["fingerprint"]]  # a new start, a new run
        command += FLAGS.get(name, []) + extra
        stamp = fingerprint(command + upstream, script, config)
        if complete(out, stamp):
            print(f"{name}: already complete for this config ({out}), not run again", flush=True)
            continue
        print(f"{name}: python {' '.join(command)}", flush=True)
        if dry_run:
            continue
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *command], cwd=ROOT, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0 or not (out / RESULT_FILE.get(name, "metrics.json")).is_file():
            print(f"{name}: failed (exit {done.returncode}) after {seconds:.0f} s; the others go on", flush=True)
            failed.append(name)
            continue
        (out / "course_run.json").write_text(json.dumps({"fingerprint": stamp, "command": command,
                                                         "wall_seconds": round(seconds, 1),
                                                         "machine": this_machine()}, indent=2) + "\n")
        checkpoints = sorted(out.glob("checkpoint-*"))  # a full model's: 1.6 GB (the MoE's 4.2 GB)
        for checkpoint in checkpoints:
            shutil.rmtree(checkpoint)
        deleted = f" (deleted {', '.join(c.name for c in checkpoints)}: nothing resumes from them)" if checkpoints else ""
        print(f"{name}: done in {seconds:.0f} s{deleted}", flush=True)
    return failed


def prompting_metrics(results: dict) -> dict:
    """00's results.json as a training run's metrics: "before" is its zero-shot row (what every lesson scores as
    before), "after" its last row (the most worked examples, held to the schema: the most prompting does here)."""
    first, last = results["rows"][0], results["rows"][-1]
    return {**results, "before": first["scores"], "after": last["scores"], "train_seconds": None,
            "trainable_parameters": 0}


def collect(root: Path) -> list[dict]:
    """One row per technique whose run left its results, in the course's order: `metrics` is what its run wrote
    (without the per-step log), `command`, `wall_seconds` and `machine` what course_run.json recorded."""
    rows = []
    for name, _, _, what in TECHNIQUES:
        path = root / name / RESULT_FILE.get(name, "metrics.json")
        if not path.is_file():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        m = prompting_metrics(m) if name == "00_prompting" else m
        marker = root / name / "course_run.json"
        run = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
        rows.append({"name": name, "what": what, "command": ["python", *run["command"]] if "command" in run else None,
                     "wall_seconds": run.get("wall_seconds"), "machine": run.get("machine"),
                     "metrics": {k: v for k, v in m.items() if k != "per_step"}})
    return rows


def chart(rows: list[dict], path: Path) -> None:
    """Left: exact match after training against training time, one colour per technique (filled: hand-written set,
    hollow: synthetic split, joined by a line). Right: each technique's peak memory, in the same colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (score, memory) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    for i, r in enumerate(rows):
        m = r["metrics"]
        color, x, peak = f"C{i}", m.get("train_seconds") or 0, m.get("peak_memory_gib")
        points = {s: 100 * m["after"][s]["exact_match"] for s in ("handwritten", "synthetic") if s in m["after"]}
        if len(points) == 2:
            score.plot([x, x], list(points.values()), color=color, alpha=0.4, linewidth=1)
        if "handwritten" in points:
            score.scatter(x, points["handwritten"], s=80, color=color, label=r["name"], zorder=3)
        if "synthetic" in points:
            score.scatter(x, points["synthetic"], s=80, facecolors="none", edgecolors=color, zorder=3,
                          label=None if "handwritten" in points else r["name"])
        memory.barh(r["name"], peak or 0, color=color)
        memory.annotate(f"{peak} GiB" if peak is not None else "-", (peak or 0, i), xytext=(4, -3),
                        textcoords="offset points", fontsize=8)
    score.set_xlabel("training time (s)")
    score.set_ylabel("exact match after training (%)")
    score.set_title("Score against time (filled: hand-written, hollow: synthetic)", fontsize=10)
    score.grid(alpha=0.3)
    score.legend(fontsize=8, loc="best")
    memory.invert_yaxis()
    device = next((r["metrics"]["memory_device"] for r in rows if r["metrics"].get("memory_device")), "device")
    memory.set_xlabel(f"peak memory (GiB, {device})")
    memory.set_title("Peak memory of the whole run", fontsize=10)
    memory.set_xlim(0, 1.2 * max((r["metrics"].get("peak_memory_gib") or 0) for r in rows) or 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def publish(rows: list[dict], root: Path) -> None:
    """The runs' results as the course's numbers: benchmarks/course_results.json and course.png, then every
    generated block."""
    missing = [r["name"] for r in rows if not r["command"]]
    if missing:
        raise SystemExit(f"error: --publish: {', '.join(missing)} has no course_run.json (not run by this script)")
    machines = {json.dumps(r["machine"], sort_keys=True) for r in rows if r["machine"]}
    if len(machines) > 1:
        raise SystemExit("error: --publish: the runs were measured on different machines; run them on one")
    data = {"machine": json.loads(machines.pop()) if machines else this_machine(),
            "techniques": [{k: r[k] for k in ("name", "what", "command", "wall_seconds", "metrics")} for r in rows]}
    (ROOT / "benchmarks" / "course_results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    shutil.copyfile(root / "course.png", ROOT / "benchmarks" / "course.png")
    changed = course_pages.write_all(data)
    print("wrote benchmarks/course_results.json, benchmarks/course.png; rewrote "
          + (", ".join(str(p.relative_to(ROOT)) for p in changed) or "no page (all current)"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [name for name, *_ in TECHNIQUES]
    parser.add_argument("--only", nargs="+", choices=names, default=names, help="techniques to run")
    parser.add_argument("--output_root", default="runs/course", help="one folder per technique, and the table")
    parser.add_argument("--table_only", action="store_true", help="do not run anything; rebuild the table")
    parser.add_argument("--dry_run", action="store_true", help="print what would run (and what is complete), run nothing")
    parser.add_argument("--publish", action="store_true",
                        help="write the runs' results to benchmarks/course_results.json and every page's numbers")
    parser.add_argument("extra", nargs="*", help="flags for every run, after --")
    args = parser.parse_args()
    root = (ROOT / args.output_root) if not Path(args.output_root).is_absolute() else Path(args.output_root)
    root.mkdir(parents=True, exist_ok=True)
    failed = [] if args.table_only else run_all(args.only, root, args.extra, args.dry_run)
    if args.dry_run:
        return
    rows = collect(root)
    if not rows:
        raise SystemExit(f"error: no finished run in {root}: run `make course` (or this script without --table_only)")
    markdown = course_pages.table(rows)  # the README's course table, from these runs
    (root / "course.md").write_text(markdown, encoding="utf-8")
    chart(rows, root / "course.png")
    print("\n" + markdown + f"\nwrote {root / 'course.md'} and {root / 'course.png'}")
    if args.publish:
        publish(rows, root)
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} failed (their output above); the table holds the others")


if __name__ == "__main__":
    main()
