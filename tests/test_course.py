"""benchmarks/course.py (`make course`): runs techniques into runs/course/<name>/, skips the ones already complete for
the same command and config, and builds the course table (markdown and PNG) from the runs' metrics.json alone.
Here two techniques run on the tiny model for 2 steps each; the ones that start from another are planned, not run."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

SMOKE = ["--max_steps", "2", "--eval_samples", "2", "--handwritten_file", "none", "--probe_file", "none",
         "--max_new_tokens", "8", "--bf16", "false", "--save_strategy", "no", "--eval_strategy", "no"]


def course(root, *args, env_threads="1"):
    return subprocess.run([sys.executable, "benchmarks/course.py", "--output_root", str(root), *args], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": env_threads,
                               "TOKENIZERS_PARALLELISM": "false"},
                          text=True, capture_output=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def ran(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("course") / "course"
    result = course(root, "--only", "02_sft", "05_peft_lora", "--", "--model_name_or_path", str(tiny_model), *SMOKE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result


def test_runs_each_technique_and_builds_the_table(ran):
    root, result = ran
    assert "02_sft: done in" in result.stdout and "05_peft_lora: done in" in result.stdout
    for name in ("02_sft", "05_peft_lora"):
        assert (root / name / "metrics.json").is_file()
        marker = json.loads((root / name / "course_run.json").read_text())
        assert marker["command"][0] == f"{name}/train.py" and marker["wall_seconds"] > 0
    md = (root / "course.md").read_text()
    lines = md.strip().splitlines()
    assert lines[0].startswith("| technique |") and len(lines) == 4  # header, rule, two techniques
    metrics = json.loads((root / "05_peft_lora" / "metrics.json").read_text())
    row = next(line for line in lines if line.startswith("| 05_peft_lora"))
    # The table is the metrics.json: its scores, times and parameter counts, not numbers of its own.
    before, after = metrics["before"]["synthetic"]["exact_match"], metrics["after"]["synthetic"]["exact_match"]
    assert f"| {before:.1%} -> {after:.1%} |" in row and f"| {metrics['train_seconds']} |" in row
    assert f"{metrics['trainable_parameters'] / 1e6:.1f}M / {metrics['total_parameters'] / 1e6:.1f}M" in row
    png = (root / "course.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_complete_technique_is_not_run_again_and_a_changed_command_is(ran, tiny_model):
    root, _ = ran
    again = course(root, "--only", "02_sft", "--", "--model_name_or_path", str(tiny_model), *SMOKE)
    assert again.returncode == 0 and "02_sft: already complete for this config" in again.stdout
    changed = course(root, "--only", "02_sft", "--", "--model_name_or_path", str(tiny_model), *SMOKE,
                     "--learning_rate", "1e-3", "--save_strategy", "steps", "--save_steps", "1")
    assert changed.returncode == 0 and "02_sft: done in" in changed.stdout
    assert "(deleted checkpoint-2: nothing resumes from them)" in changed.stdout  # (save_total_limit 1)
    assert not list((root / "02_sft").glob("checkpoint-*")) and (root / "02_sft" / "model.safetensors").is_file()


def test_table_only_and_its_error(ran, tmp_path):
    root, _ = ran
    rebuilt = course(root, "--table_only")
    assert rebuilt.returncode == 0 and "| 05_peft_lora |" in rebuilt.stdout
    empty = course(tmp_path / "none", "--table_only")
    assert empty.returncode == 1 and empty.stderr.strip().startswith("error: no finished run")


def test_a_technique_that_starts_from_another_runs_on_its_model(ran, tmp_path):
    root, _ = ran
    planned = course(root, "--dry_run", "--only", "03_grpo", "08_qat")
    assert planned.returncode == 0, planned.stderr[-2000:]
    # GRPO and QAT start from the course's own SFT model; GRPO with the reward that needs no reward model.
    assert f"03_grpo: python 03_rlhf/train_rl.py --config 03_rlhf/rl.yaml --output_dir {root / '03_grpo'} " \
           f"--overwrite_output_dir true --model_name_or_path {root / '02_sft'} --rewards json" in planned.stdout
    assert "08_qat: python 08_quantization/train_qat.py" in planned.stdout and not (root / "08_qat").exists()
    alone = course(tmp_path / "fresh", "--only", "03_dpo")  # no SFT run to start from: said in one line, not run
    assert alone.returncode == 1 and "run both (--only 02_sft 03_dpo)" in alone.stdout
    assert not (tmp_path / "fresh" / "03_dpo").exists()


def test_prompting_is_the_first_row_and_trains_nothing(tiny_model, tmp_path):
    """00 trains nothing: its row reads prompt.py's results.json, the zero-shot row as "before" and the last row
    (the most worked examples, held to the schema) as "after", with no training time and no trained parameters."""
    root = tmp_path / "course"
    result = course(root, "--only", "00_prompting", "--", "--model_name_or_path", str(tiny_model), "--shots", "0", "1",
                    "--eval_samples", "2", "--handwritten_file", "none", "--max_new_tokens", "8")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((root / "00_prompting" / "results.json").read_text())["rows"]
    assert [(r["shots"], r["decoding"]) for r in rows] == [(0, "free"), (0, "json_schema"), (1, "free"),
                                                           (1, "json_schema")]
    line = next(line for line in (root / "course.md").read_text().splitlines() if line.startswith("| 00_prompting"))
    first, last = rows[0]["scores"]["synthetic"], rows[-1]["scores"]["synthetic"]
    assert f"| {first['exact_match']:.1%} -> {last['exact_match']:.1%} |" in line
    assert line.endswith("| - | - |")  # no peak memory taken, nothing trained
    again = course(root, "--only", "00_prompting", "--", "--model_name_or_path", str(tiny_model), "--shots", "0", "1",
                   "--eval_samples", "2", "--handwritten_file", "none", "--max_new_tokens", "8")
    assert "00_prompting: already complete for this config" in again.stdout
