"""01_full_finetuning/train.py on the tiny model, one process: continued pre-training on the prose files.

Losses of a short seeded run are compared with recorded values; full and partial finetuning are checked
weight by weight against the starting model; resume and the errors are the template's. Multi-process
launchers (DDP, DeepSpeed ZeRO-2/3) are in test_launchers.py.
"""

import json
import math

import pytest
import torch
from conftest import interrupted_at_step_2, run_script
from safetensors.torch import load_file

SCRIPT = "01_full_finetuning/train.py"
# Recorded on the CPU with OMP_NUM_THREADS=1: 4 steps of 8 x 256 prose tokens, lr 1e-3, seed 42, fp32.
EXPECTED_LOSSES = [6.2479, 6.2435, 6.2244, 6.2112]
FAST = ["--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "1", "--eval_samples", "4",
        "--max_new_tokens", "8", "--probe_file", "none", "--bf16", "false", "--report_to", "none"]


def train(model, out, *extra):
    result = run_script(SCRIPT, "--config", "01_full_finetuning/config.yaml", "--model_name_or_path", str(model),
                        "--output_dir", str(out), *FAST, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text(encoding="utf-8")), result.stdout


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    metrics, stdout = train(tiny_model, out, "--save_steps", "2", "--save_total_limit", "2")
    return out, metrics, stdout


def test_losses_match_the_recorded_run(run):
    _, metrics, _ = run
    assert len(metrics["train_losses"]) == 4 and all(math.isfinite(x) for x in metrics["train_losses"])
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)


def test_every_weight_trained_and_held_out_perplexity_fell(run, tiny_model):
    out, metrics, _ = run
    start, end = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert start.keys() == end.keys() and [n for n in start if torch.equal(start[n], end[n])] == []
    assert metrics["trainable_parameters"] == metrics["total_parameters"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert metrics["train_tokens"] == 4 * 8 * 256  # full rows only: every token counted
    assert metrics["before"] is not None and "synthetic" in metrics["after"]


def test_prints_the_memory_budget_and_reports_it_beside_the_peak(run):
    out, metrics, stdout = run
    assert "memory budget (estimate, per device)" in stdout and "optimizer states" in stdout
    estimate = metrics["estimate_gib"]
    assert estimate["total"] == pytest.approx(sum(estimate[k] for k in ("weights", "gradients", "optimizer",
                                                                        "activations")), abs=2e-3)
    assert metrics["peak_memory_gib"] > 0
    assert {"loss_curve.png", "predictions.jsonl", "config.json"} <= {p.name for p in out.iterdir()}


def test_the_budget_counts_packed_rows(run, tiny_model):
    """Rows are packed blocks with no padding, so SDPA reads k and v at their grouped width and no mask is kept:
    the printed budget's activations are ftlab.memory's estimate for unpadded rows (padded=False)."""
    from ftlab.memory import estimate_training

    _, _, stdout = run
    printed = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in stdout.splitlines()
               if line.startswith("| ")}
    packed = estimate_training(str(tiny_model), precision="fp32", batch=8, seq=256, padded=False)
    assert printed["activations"] == f"{packed.activations / 1e6:.2f}"  # MB: the table's unit below 1 GB


def test_partial_finetuning_trains_only_the_last_blocks(tiny_model, tmp_path):
    """--train_last_k_blocks 1: block 1 and the final norm move; embeddings and block 0 stay bit-identical."""
    metrics, stdout = train(tiny_model, tmp_path / "partial", "--train_last_k_blocks", "1", "--save_strategy", "no",
                            "--eval_before", "false")
    start, end = load_file(tiny_model / "model.safetensors"), load_file(tmp_path / "partial" / "model.safetensors")
    changed = {n for n in start if not torch.equal(start[n], end[n])}
    assert changed and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in changed), changed
    assert {n for n in start if n.startswith("model.layers.1.")} <= changed
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert "partial finetuning:" in stdout and metrics["train_last_k_blocks"] == 1


def test_resume_replays_the_same_losses(run, tiny_model, tmp_path):
    out, metrics, _ = run
    resumed = interrupted_at_step_2(out, tmp_path)
    again, _ = train(tiny_model, resumed, "--resume", "true", "--eval_before", "false", "--save_steps", "2")
    assert again["train_losses"][2:] == pytest.approx(metrics["train_losses"][2:], abs=1e-4)


@pytest.mark.parametrize("args, says", [
    (["--train_last_k_blocks", "5"], "--train_last_k_blocks 5: this model has 2 blocks"),
    (["--prose_train_file", "nowhere.jsonl"], "nowhere.jsonl: no such file"),
])
def test_errors_are_one_line(tiny_model, tmp_path, args, says):
    result = run_script(SCRIPT, "--config", "01_full_finetuning/config.yaml", "--model_name_or_path", str(tiny_model),
                        "--output_dir", str(tmp_path / "o"), *FAST, *args)
    assert result.returncode == 1 and says in result.stderr.strip().splitlines()[-1]
