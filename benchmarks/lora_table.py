"""Rank x target modules (and a soft prompt) for 05_peft_lora, one short run each, as one markdown table.

    python benchmarks/lora_table.py                      # r 1, 4, 16, 64 x (all linear, q+v), + prompt tuning
    python benchmarks/lora_table.py --max_steps 30 --ranks 4 16

Each row is `05_peft_lora/train.py --config 05_peft_lora/config.yaml` with the row's switches and the
same short budget (flags after `--` reach every run), scored on the synthetic split and the
hand-written set; the forgetting probe is skipped to save time. Runs write to runs/lora_table/.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rows(ranks):
    for r in ranks:
        for name, targets in (("all linear", ["all-linear"]), ("q, v", ["q_proj", "v_proj"])):
            yield f"LoRA r={r}, {name}", ["--lora_r", str(r), "--lora_alpha", str(2 * r),
                                         "--lora_target_modules", *targets]
    yield "prompt tuning, 20 tokens", ["--peft_method", "prompt_tuning", "--learning_rate", "3e-2"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("extra", nargs="*", help="flags for every run, after --")
    args = parser.parse_args()
    table = [("| variant | trainable params | % of model | adapter MB | peak GiB | s/step | exact synthetic | "
              "exact hand-written |"), "|---|---|---|---|---|---|---|---|"]
    for label, switches in rows(args.ranks):
        out = ROOT / "runs" / "lora_table" / label.replace(" ", "_").replace(",", "").replace("=", "")
        command = [sys.executable, str(ROOT / "05_peft_lora" / "train.py"), "--config", "05_peft_lora/config.yaml",
                   "--output_dir", str(out), "--overwrite_output_dir", "true", "--max_steps", str(args.max_steps),
                   "--probe_file", "none", "--eval_before", "false", "--eval_strategy", "no", "--save_strategy", "no",
                   "--save_merged", "false", *switches, *args.extra]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{label}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        table.append(f"| {label} | {m['trainable_parameters']:,} | "
                     f"{m['trainable_parameters'] / m['total_parameters']:.2%} | {m['adapter_mb']:.2f} | "
                     f"{m['peak_memory_gib']:.2f} | {m['train_seconds'] / args.max_steps:.1f} | "
                     f"{m['after']['synthetic']['exact_match']:.1%} | {m['after']['handwritten']['exact_match']:.1%} |")
        print(table[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
