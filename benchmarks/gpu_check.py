"""One command that checks the course on an NVIDIA GPU in about 10 minutes, and writes one table of what it measured.

    make gpu-check                                       # = python benchmarks/gpu_check.py (hub models download)
    python benchmarks/gpu_check.py --budget_minutes 30   # a T4 (fp16, about 3x slower): the same pieces, longer limits
    python benchmarks/gpu_check.py --only 02_sft 08_qat  # some pieces (08 starts from 02's run of this check)
    python benchmarks/gpu_check.py --model 05_peft_lora=Qwen/Qwen2.5-1.5B-Instruct   # another model for one lesson
    # No network (no hub): one local model folder for every lesson (04 upcycles a Llama-family model: give it one),
    # packages from a folder instead of a virtual environment
    PYTHONPATH=.device-site:. HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py --model_dir /models/Qwen2.5-0.5B-Instruct \
        --model 04_moe=/models/SmolLM2-360M-Instruct
    python benchmarks/gpu_check.py --cpu_smoke --model_dir TINY --model 06_qlora=TINY64   # every piece, tiny, on a CPU

It needs no `make setup`: any Python that has the packages runs it (Colab after `pip install -e .`, or a machine
with the packages on PYTHONPATH). Every piece runs in its own process, with this Python (sys.executable) and
this environment (PYTHONPATH included), with its own time limit, in this order:

  0. models     each lesson's hub model downloaded first, outside the budget (a first run fetches ~5 GB)
  1. gpu_tests   the `gpu`-marked tests (make test-gpu's): python -m pytest -m gpu, in 4 processes at once
                 (--test_workers; most of each test is a script's start-up, and dozens of them one after another
                 would take the whole budget), one where pytest-xdist is missing; lora_speed's own gpu test is
                 left out, piece 2 runs the same paths at full size
  2. benchmark   benchmarks/lora_speed.py at Llama-3.2-1B's shape (batch 4 x 2048): LoRA and QLoRA, plain,
                 with Liger, with Unsloth; tokens/s and peak memory of each
  3. lessons     each lesson's GPU config, shortened (10-20 steps, 16 synthetic eval examples, no checkpoints,
                 no forgetting probe), into runs/gpu_check/<lesson>/:
                   01_full_finetuning  02_sft  03_dpo  04_moe  05_peft_lora  06_qlora  08_qat
                 A config that starts from a finetuned run (runs/..., as 08's QAT does) starts from the 02_sft
                 run this check has just made.

A piece that fails (or runs past its limit) is marked in the table with its error's last line, and the next piece
runs. The time limits split --budget_minutes (default 10, for one H100): the gpu tests 20%, the benchmark 30%,
the lessons the rest (04's MoE, 1.07B parameters, counts 1.5 lessons); a piece may also use what earlier pieces
left unused, never what later ones are owed. These shares are estimates until a first run on a GPU: its
gpu_check.json holds each piece's seconds. Each piece's output is in runs/gpu_check/<piece>.log.

Then runs/gpu_check/gpu_check.md (and gpu_check.json, the same facts): the GPU, driver, torch and CUDA versions,
compute capability and the precision chosen; one row per piece: pass/fail, wall time, and for each lesson
s/step, tokens/s, peak GiB and exact match before -> after on both eval sets (synthetic, hand-written), all read
from the lesson's metrics.json (every script writes it through ftlab/report.py); the pytest summary line; the
benchmark's own table. The exit status is 1 if any piece failed.

Without an NVIDIA GPU that torch can use, it stops in one line. --cpu_smoke runs every piece at the tiny shape
on the CPU instead (the tests do): the lessons for 2 steps on --model_dir, the benchmark at --shape tiny, and the
gpu tests only listed (pytest --collect-only).
"""

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (name, script, GPU config, CPU config, steps, weight): weight is the lesson's share of the lessons' time.
# The steps are few on purpose: enough to time a step after the first (which compiles and warms up), and to see
# the scores move; the lessons' own GPU configs train for their full ~10 minutes.
LESSONS = [
    ("01_full_finetuning", "01_full_finetuning/train.py", "01_full_finetuning/gpu.yaml",
     "01_full_finetuning/config.yaml", 20, 1),
    ("02_sft", "02_sft/train.py", "02_sft/gpu.yaml", "02_sft/config.yaml", 20, 1),
    ("03_dpo", "03_rlhf/train_dpo.py", "03_rlhf/dpo_gpu.yaml", "03_rlhf/dpo.yaml", 10, 1),  # a step: 4 pairs, 2 models
    ("04_moe", "04_moe/train.py", "04_moe/gpu.yaml", "04_moe/config.yaml", 10, 1.5),
    ("05_peft_lora", "05_peft_lora/train.py", "05_peft_lora/gpu.yaml", "05_peft_lora/config.yaml", 20, 1),
    ("06_qlora", "06_qlora/train.py", "06_qlora/gpu.yaml", "06_qlora/config.yaml", 20, 1),
    ("08_qat", "08_quantization/train_qat.py", "08_quantization/train_qat_gpu.yaml",
     "08_quantization/train_qat.yaml", 10, 1),
]
# Flags every lesson gets: short, no checkpoints (each script still saves its final model), no forgetting probe
# (not in the table), one loss logged per step (so the number of losses in metrics.json is the number of steps).
SHORT = ["--overwrite_output_dir", "true", "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1",
         "--report_to", "none", "--probe_file", "none"]
EVAL_SAMPLES = 16  # synthetic eval examples scored before and after: one generation batch in the GPU configs
                   # (all 80 hand-written ones are always scored)
# Flags one lesson adds: 08 trains QAT only (its plain-finetuning comparison would double the run).
EXTRA = {"08_qat": ["--compare_plain", "false"]}
SMOKE_EXTRA = {"03_dpo": ["--eval_pairs", "4"], "04_moe": ["--load_samples", "4"]}
STARTS_FROM = "02_sft"  # a lesson whose config starts from runs/... starts from this lesson's run here

# Shares of the budget; the lessons share the rest by their weights.
TESTS_SHARE, BENCH_SHARE = 0.20, 0.30
BENCH_SHAPE, BENCH_STEPS = "llama-3.2-1b", 3  # 3 steps of 4 x 2048 tokens a path; the first is left out of tokens/s


def machine_facts() -> dict:
    """What the table's header shows (card, driver, versions, the precision every lesson trains in), and `no_gpu`:
    why this machine cannot run the check ('' when it can). Run in a process of its own (`--facts`), so that this
    one never holds a CUDA context (some 0.5 GB of the card) while the pieces run."""
    import platform
    from importlib import metadata

    import torch

    from ftlab import platforms

    hw = platforms.detect()
    no_gpu = hw.cuda_problem  # an NVIDIA card torch cannot use: why, and the fix
    if not no_gpu and not (torch.cuda.is_available() and hw.cuda):
        no_gpu = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None else
                  f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            no_gpu += f", CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
    facts = {"no_gpu": no_gpu, "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
             "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "none"}
    for package in ("transformers", "trl", "peft", "bitsandbytes"):
        try:
            facts[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts[package] = "not installed"
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        facts.update(gpu=torch.cuda.get_device_name(), capability=f"{major}.{minor}",
                     gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    else:
        facts.update(gpu="none", capability=None, gpu_memory_gib=None)
    facts["driver"] = platforms.nvidia_driver() or "none"
    try:
        choice = platforms.choose(hw)
        facts["precision"] = f"{choice.device}, {choice.precision} ({choice.why})"
    except Exception as e:  # noqa: BLE001  (a card torch cannot use: its one line is the fact)
        facts["precision"] = f"none: {e}"
    return facts


def subprocess_env() -> dict:
    """This environment for every piece: PYTHONPATH made absolute (the pieces run from the repository root, so a
    relative PYTHONPATH=.device-site:. given from elsewhere still finds the same folders) and ending with the
    repository (the scripts import ftlab also where it was never pip-installed), output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    paths = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([str(ROOT)] if str(ROOT) not in paths else []))
    return env


def probe(env: dict) -> dict:
    """machine_facts() from a process of its own, with the pieces' environment."""
    done = subprocess.run([sys.executable, __file__, "--facts"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FACTS ")]
    if done.returncode or not lines:
        raise SystemExit(f"error: could not read this machine's torch and GPU: "
                         f"{last_error_line(done.stderr + done.stdout) or f'exit status {done.returncode}'}")
    return json.loads(lines[-1][6:])


def run_piece(name: str, command: list[str], limit: float, env: dict, out: Path) -> dict:
    """Run one piece (`command`, from the repository root) for at most `limit` seconds; its stdout and stderr go to
    out/<name>.log. Returns its record: exit code, wall seconds, and the error's last line if it failed."""
    log = out / f"{name}.log"
    print(f"\n[{name}] limit {limit:.0f} s: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        # A session of its own: on timeout the whole group goes (pytest's and lora_speed's children too).
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                   start_new_session=os.name == "posix")
        try:
            code = process.wait(timeout=max(limit, 1))
            timed_out = False
        except subprocess.TimeoutExpired:
            if os.name == "posix":
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            code, timed_out = process.wait(), True
    seconds = time.perf_counter() - start
    text = log.read_text(encoding="utf-8", errors="replace")
    record = {"piece": name, "command": command, "exit_code": code, "seconds": round(seconds, 1),
              "limit_seconds": round(limit), "log": str(log.relative_to(ROOT) if log.is_relative_to(ROOT) else log),
              "output": text}
    if timed_out:
        record["error"] = f"timed out after {limit:.0f} s (limit from --budget_minutes)"
    elif code != 0:
        record["error"] = last_error_line(text) or f"exit status {code}"
    print(f"[{name}] {'failed: ' + record['error'] if 'error' in record else 'done'} in {seconds:.0f} s", flush=True)
    return record


def last_error_line(text: str) -> str:
    """The line that says what went wrong: our scripts' `error: ...`, else a traceback's last line, else the last."""
    lines = [line.strip() for chunk in text.splitlines() for line in chunk.split("\r") if line.strip()]
    for line in reversed(lines):
        if line.startswith(("error:", "FAILED", "ERROR")) or "Error:" in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


def config_model(config: str) -> str:
    """The model_name_or_path a lesson's YAML names ('' if none)."""
    import yaml

    path = ROOT / config
    return str((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("model_name_or_path", "")) \
        if path.is_file() else ""


def fetch_models(pieces: list[str], overrides: dict, model_dir: str | None, configs: str) -> None:
    """Download each lesson's hub model once (`ftlab.models.resolve_model`: the hub's cache, which the scripts then
    read), outside the time budget: a download's minutes would otherwise count as a lesson's. A model that cannot be
    fetched is left to its lesson, which then fails with its own one line."""
    from ftlab.models import ModelNotFound, resolve_model

    for name, _, gpu_config, cpu_config, *_ in LESSONS:
        model = overrides.get(name) or model_dir or config_model(gpu_config if configs == "gpu" else cpu_config)
        if name not in pieces or not model or model.startswith("runs/") or Path(model).exists():
            continue
        start = time.perf_counter()
        try:
            print(f"[models] {model}: {resolve_model(model)} ({time.perf_counter() - start:.0f} s)", flush=True)
        except ModelNotFound as e:
            print(f"[models] {model}: not fetched ({e})", flush=True)


def lesson_row(record: dict, out: Path) -> dict:
    """The lesson's numbers from its metrics.json; a run without one, or with a loss that is not finite, failed."""
    path = out / "metrics.json"
    if "error" in record or record.get("not_run"):
        return record
    if not path.is_file():
        return {**record, "error": f"no {path.name} in {out} (exit status {record['exit_code']})"}
    m = json.loads(path.read_text(encoding="utf-8"))
    losses = m.get("train_losses") or []
    steps = len(losses)  # --logging_steps 1: one logged loss per step
    row = {**record, "metrics": str(path), "steps": steps, "train_seconds": m.get("train_seconds"),
           "seconds_per_step": round(m["train_seconds"] / steps, 3) if steps and m.get("train_seconds") else None,
           "tokens_per_second": m.get("train_tokens_per_second"), "peak_memory_gib": m.get("peak_memory_gib"),
           "memory_device": m.get("memory_device"), "parameters_trained_on": m.get("parameters_trained_on"),
           "first_loss": losses[0] if losses else None,
           "last_loss": losses[-1] if losses else None}
    for when in ("before", "after"):
        for name in ("synthetic", "handwritten"):
            scores = (m.get(when) or {}).get(name)
            row[f"{name}_{when}"] = scores["exact_match"] if scores else None
    if not losses or not all(math.isfinite(x) for x in losses):
        row["error"] = f"training losses not finite: {losses}"
    return row


def pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(facts: dict, rows: list[dict], bench_table: str, command: str, total: float, budget: float,
          eval_samples: int) -> str:
    """The markdown report: the machine, one row per piece, the pytest summary, the benchmark's table."""
    lines = ["# GPU check", "", f"`{command}`: {total:.0f} s of a {budget:.0f} s budget.", "",
             "| | |", "|---|---|",
             f"| GPU | {facts['gpu']}" + (f" (compute capability {facts['capability']}, {facts['gpu_memory_gib']} GiB)"
                                         if facts["capability"] else "") + " |",
             f"| driver | {facts['driver']} |",
             f"| torch | {facts['torch']} (CUDA {facts['cuda']}), Python {facts['python']} |",
             (f"| libraries | transformers {facts['transformers']}, TRL {facts['trl']}, PEFT {facts['peft']}, "
              f"bitsandbytes {facts['bitsandbytes']} |"),
             f"| precision chosen | {facts['precision']} |", "",
             ("| piece | model | result | wall s (limit) | steps | s/step | tokens/s | peak GiB | "
              "synthetic exact, before -> after | hand-written exact, before -> after |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        result = ("not run: " + r["not_run"]) if r.get("not_run") else ("FAIL: " + r["error"]) if r.get("error") \
            else "pass"
        if r["piece"] == "gpu_tests" and r.get("summary") and not r.get("error"):
            result += f" ({r['summary']})"
        result = result.replace("|", "\\|")
        wall = f"{r['seconds']:.0f} ({r['limit_seconds']})" if r.get("seconds") is not None else "-"
        lines.append(f"| {r['piece']} | {r.get('model') or '-'} | {result} | {wall} | {r.get('steps') or '-'} | "
                     f"{num(r.get('seconds_per_step'), '.3f')} | {num(r.get('tokens_per_second'), ',.0f')} | "
                     f"{num(r.get('peak_memory_gib'), '.2f')} | "
                     f"{pct(r.get('synthetic_before'))} -> {pct(r.get('synthetic_after'))} | "
                     f"{pct(r.get('handwritten_before'))} -> {pct(r.get('handwritten_after'))} |")
    tests = next((r for r in rows if r["piece"] == "gpu_tests"), None)
    if tests:
        lines += ["", f"gpu tests: `{tests.get('summary') or tests.get('not_run') or tests.get('error')}`"]
    note = (f"Scores: exact match on {eval_samples} synthetic eval examples and the 80 hand-written ones, after a "
            "few steps only: this checks that each lesson trains and scores on this machine; the lessons' own GPU "
            "configs train for about 10 minutes. s/step: train seconds / steps, the first (warm-up) step included. "
            "Peak GiB: torch.cuda.max_memory_allocated during training (on a CPU, the process's peak resident set).")
    lines += ["", note, "", "## LoRA/QLoRA benchmark", "", bench_table or "(not run)"]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ["gpu_tests", "benchmark", *(name for name, *_ in LESSONS)]
    parser.add_argument("--budget_minutes", type=float, default=10.0,
                        help="the whole check's time; each piece's limit is its share (10 fits an H100; a T4: 30)")
    parser.add_argument("--only", nargs="+", choices=names, default=names, metavar="PIECE",
                        help=f"pieces to run, of: {' '.join(names)}")
    parser.add_argument("--model_dir", help="one local model folder for every lesson (no hub needed) and the "
                                            "benchmark's tokenizer; 08 (and a config that says runs/...) still "
                                            "starts from this check's 02_sft run")
    parser.add_argument("--model", action="append", default=[], metavar="LESSON=MODEL",
                        help="a model (hub id or folder) for one lesson, e.g. 06_qlora=/models/x; wins over "
                             "--model_dir; repeat it for more lessons")
    parser.add_argument("--max_steps", type=int, help="steps for every lesson instead of the check's own")
    parser.add_argument("--bench_steps", type=int, default=BENCH_STEPS, help="lora_speed.py --steps")
    parser.add_argument("--test_workers", type=int, default=4,
                        help="gpu tests run at once (pytest-xdist -n; 0: one after another, as make test-gpu)")
    parser.add_argument("--configs", choices=("gpu", "cpu"), default="gpu",
                        help="each lesson's GPU config (the check) or its CPU config.yaml")
    parser.add_argument("--cpu_smoke", action="store_true",
                        help="no GPU needed: every piece at the tiny shape on --model_dir, 2 steps, gpu tests listed")
    parser.add_argument("--output_root", type=Path, default=ROOT / "runs" / "gpu_check")
    parser.add_argument("--facts", action="store_true", help=argparse.SUPPRESS)  # internal: print machine_facts()
    args = parser.parse_args()
    if args.facts:
        import ftlab.startup  # noqa: F401  (silences the libraries' known harmless warnings, as in every script)

        print("FACTS " + json.dumps(machine_facts()), flush=True)
        return

    overrides = {}
    for item in args.model:
        lesson, _, model = item.partition("=")
        if lesson not in names[2:] or not model:
            parser.error(f"--model {item!r}: must be LESSON=MODEL with LESSON one of {', '.join(names[2:])}")
        overrides[lesson] = model
    if args.cpu_smoke and not args.model_dir:
        parser.error("--cpu_smoke needs --model_dir: a tiny local model (tests/conftest.py builds one)")
    import importlib.util

    for package in ("torch", "yaml"):  # a Python without the packages: one line, as every lesson script says it
        if importlib.util.find_spec(package) is None:
            raise SystemExit(f"error: {sys.executable} lacks the package {package!r}: run `make setup` (or pip "
                             "install -e .), or put the packages on PYTHONPATH")

    # ---- The machine ------------------------------------------------------------------------------------------
    env = subprocess_env()
    facts = probe(env)
    if facts["no_gpu"] and not args.cpu_smoke:
        raise SystemExit("error: make gpu-check needs an NVIDIA GPU that torch can use; this machine has none "
                         f"({facts['no_gpu']})")
    if args.cpu_smoke and facts["gpu"] == "none":
        facts["gpu"] = "none: a CPU smoke run"
    if facts["gpu_count"] > 1 and "CUDA_VISIBLE_DEVICES" not in env:  # plain python refuses several GPUs
        env["CUDA_VISIBLE_DEVICES"] = "0"
        print(f"{facts['gpu_count']} GPUs are visible: the check runs on the first (CUDA_VISIBLE_DEVICES=0)")
    print(f"GPU: {facts['gpu']} (compute capability {facts['capability'] or '-'}), driver {facts['driver']}, "
          f"torch {facts['torch']} (CUDA {facts['cuda']}); {facts['precision']}", flush=True)
    out = args.output_root if args.output_root.is_absolute() else ROOT / args.output_root
    out.mkdir(parents=True, exist_ok=True)
    budget = 60 * args.budget_minutes
    lesson_weight = sum(w for name, *_, w in LESSONS if name in args.only)
    shares = {"gpu_tests": TESTS_SHARE * budget, "benchmark": BENCH_SHARE * budget}
    lessons_budget = budget - sum(shares[p] for p in shares if p in args.only)
    shares.update({name: lessons_budget * w / lesson_weight for name, *_, w in LESSONS if name in args.only})
    pieces = [p for p in names if p in args.only]
    deadline = time.monotonic() + budget
    started = time.perf_counter()

    def limit(piece: str) -> float:
        """Its share, or more if earlier pieces left time: never what the pieces after it are owed."""
        left = deadline - time.monotonic()
        owed = sum(shares[p] for p in pieces[pieces.index(piece) + 1:])
        return min(left, max(shares[piece], left - owed))

    rows, bench_table = [], ""

    # ---- 0. The lessons' hub models, downloaded before any clock starts (a first run fetches ~5 GB) --------------
    if not args.cpu_smoke:
        fetch_models(pieces, overrides, args.model_dir, args.configs)

    # ---- 1. The gpu tests -------------------------------------------------------------------------------------
    # pyproject's addopts cleared (-o addopts=): they select `not slow` and ask for pytest-xdist, which a bare GPU
    # machine may lack. With it, --dist load spreads single tests (not files: test_gpu.py holds most of them).
    if "gpu_tests" in pieces:
        command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", "-m", "gpu", "-q"]
        if args.cpu_smoke:
            command += ["--collect-only"]
        else:
            command += ["--deselect", "tests/test_lora_speed.py::test_every_path_runs_on_a_gpu"]
            if args.test_workers > 0 and importlib.util.find_spec("xdist") is not None:
                command += ["-n", str(args.test_workers), "--dist", "load"]
        record = run_piece("gpu_tests", command, limit("gpu_tests"), env, out)
        lines = [line.strip("= ") for line in record["output"].splitlines() if line.strip("= ")]
        record["summary"] = lines[-1] if lines else ""
        if "error" in record and record["summary"] and "timed out" not in record["error"]:
            record["error"] = record["summary"]  # "1 failed, 4 passed in 95.1s": which ones, in the log
        elif "error" not in record and not args.cpu_smoke and " passed" not in record["summary"]:
            record["error"] = record["summary"] or "no test ran"
        rows.append(record)

    # ---- 2. The LoRA/QLoRA/Liger/Unsloth benchmark --------------------------------------------------------------
    if "benchmark" in pieces:
        shape = "tiny" if args.cpu_smoke else BENCH_SHAPE
        bench_out = out / "benchmark"
        command = [sys.executable, "benchmarks/lora_speed.py", "--shape", shape, "--steps",
                   str(2 if args.cpu_smoke else args.bench_steps), "--out", str(bench_out)]
        if args.model_dir:  # the random model's tokenizer from it: an offline machine may lack the embedded SmolLM2
            command += ["--tokenizer", args.model_dir]
        if args.cpu_smoke:  # one path shows the piece works (tests/test_lora_speed.py runs the others on a CPU)
            command += ["--batch", "2", "--seq", "64", "--paths", "peft-lora"]
        (bench_out / "lora_speed.md").unlink(missing_ok=True)
        record = run_piece("benchmark", command, limit("benchmark"), env, out)
        record["model"] = f"random, {shape} shape"
        md = bench_out / "lora_speed.md"
        if md.is_file():
            bench_table = md.read_text(encoding="utf-8").strip()
            failed_paths = [line.split("|")[1].strip() for line in bench_table.splitlines() if "| failed:" in line]
            if failed_paths and "error" not in record:
                record["error"] = f"{len(failed_paths)} path(s) failed: {'; '.join(failed_paths)}"
        elif "error" not in record:
            record["error"] = f"no {md}"
        rows.append(record)

    # ---- 3. Each lesson's GPU config, shortened ------------------------------------------------------------------
    for name, script, gpu_config, cpu_config, steps, _ in LESSONS:
        if name not in pieces:
            continue
        config = gpu_config if args.configs == "gpu" else cpu_config
        run_dir = out / name
        shutil.rmtree(run_dir, ignore_errors=True)  # a failed run must not leave the last check's metrics.json
        model = overrides.get(name)
        if model is None and config_model(config).startswith("runs/"):  # starts from a finetuned model
            model = str(out / STARTS_FROM)
            if not (out / STARTS_FROM / "config.json").is_file():
                rows.append({"piece": name, "model": f"{STARTS_FROM}'s run", "not_run": f"it starts from "
                             f"{STARTS_FROM}'s model, which this check did not make (failed or not in --only)"})
                print(f"\n[{name}] not run: {rows[-1]['not_run']}", flush=True)
                continue
        model = model or args.model_dir
        command = [sys.executable, script, "--config", config, "--output_dir", str(run_dir), *SHORT,
                   "--max_steps", str(args.max_steps or (2 if args.cpu_smoke else steps)),
                   "--eval_samples", str(2 if args.cpu_smoke else EVAL_SAMPLES), *EXTRA.get(name, [])]
        if model:
            command += ["--model_name_or_path", model]
        if args.cpu_smoke:
            command += ["--max_new_tokens", "8", *SMOKE_EXTRA.get(name, [])]
        record = run_piece(name, command, limit(name), env, out)
        record["model"] = Path(model).name if model and Path(model).exists() else model or config_model(config)
        row = lesson_row(record, run_dir)
        # A run that trained anywhere but on the GPU fails this check: the script's device line, and where its
        # trainable parameters were at every step (metrics.json's parameters_trained_on, from ftlab.resources).
        device = next((line for line in record["output"].splitlines() if line.startswith("device: ")), "")
        where = row.get("parameters_trained_on")
        if not args.cpu_smoke and "error" not in row and not (device.startswith("device: cuda") and where == "cuda"):
            row["error"] = f"did not train on the GPU ({device or 'no device line'}; parameters on {where})"
        rows.append(row)

    # ---- The table --------------------------------------------------------------------------------------------
    total = time.perf_counter() - started
    shown = " ".join(["python", *(a if " " not in a else repr(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])])
    report = table(facts, rows, bench_table, shown, total, budget, 2 if args.cpu_smoke else EVAL_SAMPLES)
    (out / "gpu_check.md").write_text(report, encoding="utf-8")
    for r in rows:
        r.pop("output", None)
    failed = [r["piece"] for r in rows if r.get("error") or r.get("not_run")]
    (out / "gpu_check.json").write_text(json.dumps(
        {"environment": facts, "budget_seconds": budget, "total_seconds": round(total, 1), "pieces": rows,
         "benchmark_table": bench_table, "failed": failed}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\n" + report + f"\nwrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} ({total:.0f} s in all)")
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} failed (see the table and {out}/<piece>.log)")


if __name__ == "__main__":
    main()
