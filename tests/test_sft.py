"""02_sft/train.py end to end on the tiny model: losses, learning, outputs, resume, and its errors.

Like torchtune's recipe tests, the losses of a short seeded run are compared with recorded values: a
change in data formatting, loss masking or optimisation shows up here as a different number.
"""

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, interrupted_at_step_2, run_script
from safetensors.torch import load_file

from ftlab.data import load_split

SCRIPT = "02_sft/train.py"
# Recorded on the CPU with OMP_NUM_THREADS=1 (`make test`): 4 steps, lr 1e-3, batch 8, seed 42, fp32
# (`--bf16 false`: the recorded numbers must not depend on whether the CPU has bf16).
EXPECTED_LOSSES = [6.2376, 6.2516, 6.2079, 6.1843]
# What `make test-slow` requires of the demo's training (exact match after; see test_real_model_learns_the_task).
HANDWRITTEN_BAR, SYNTHETIC_BAR = 0.50, 0.50


def train(model, out, *extra, precision=("--bf16", "false")):
    args = ["--config", "02_sft/config.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "1", "--eval_steps", "2",
            "--save_steps", "2", "--save_total_limit", "2", "--eval_samples", "4", "--max_new_tokens", "8",
            "--report_to", "tensorboard", *precision, *extra]
    result = run_script(SCRIPT, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    return out, train(tiny_model, out)


def test_losses_are_finite_and_match_the_recorded_run(run):
    _, metrics = run
    losses = metrics["train_losses"]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses == pytest.approx(EXPECTED_LOSSES, abs=2e-3)


def test_precision_follows_the_hardware_without_a_flag(tiny_model, tmp_path):
    """No --bf16 flag: bf16 autocast where the CPU has native bf16 (or on a GPU), fp32 elsewhere; same learning."""
    from ftlab.platforms import cpu_has_bf16

    metrics = train(tiny_model, tmp_path / "auto", "--eval_before", "false", "--save_strategy", "no", precision=())
    assert metrics["bf16"] == (torch.cuda.is_available() or cpu_has_bf16())
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=0.05)  # bf16 rounds, it does not diverge


def test_every_trainable_parameter_changed(run, tiny_model):
    out, metrics = run
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == []
    assert metrics["trainable_parameters"] == metrics["total_parameters"] == sum(t.numel() for t in before.values())


def test_outputs_are_written(run):
    out, metrics = run
    for name in ("model.safetensors", "tokenizer.json", "metrics.json", "loss_curve.png"):
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    sets = {name: sum(row["set"] == name for row in rows) for name in ("synthetic", "handwritten", "probe")}
    assert sets == {"synthetic": 4, "handwritten": len(load_split("handwritten_eval")),
                    "probe": len(load_split("general_probe"))}
    assert all(set(row) == {"set", "text", "gold", "before", "after"} for row in rows)
    assert list(out.glob("runs/*/events.out.tfevents.*")), "no TensorBoard log"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for when in ("before", "after"):  # both eval sets and the forgetting probe, before and after training
        assert metrics[when]["synthetic"]["n"] == 4
        assert metrics[when]["handwritten"]["n"] == sets["handwritten"]
        assert metrics[when]["probe"]["n"] == sets["probe"]
    assert set(metrics["after"]["handwritten"]["fields"]) == {"name", "age", "city", "email", "signup_date"}
    assert metrics["train_seconds"] > 0 and metrics["peak_memory_gib"] > 0
    assert metrics["memory_device"] == metrics["parameters_trained_on"] == "cpu"
    assert metrics["train_tokens"] > 4 * 8 * 50 and metrics["train_tokens_per_second"] > 0
    assert metrics["bf16"] is False


def test_resume_continues_from_the_checkpoint(run, tiny_model, tmp_path):
    """Resuming at step 2 must replay steps 3-4 exactly as the uninterrupted run did."""
    out, metrics = run
    resumed = interrupted_at_step_2(out, tmp_path)
    again = train(tiny_model, resumed, "--resume", "true", "--eval_before", "false")
    assert again["train_losses"] == pytest.approx(metrics["train_losses"], abs=1e-5)
    assert again["before"] is None and again["train_tokens"] is None  # tokens of a part-run would mislead: none
    state = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_lora_trains_only_the_adapter(tiny_model, tmp_path):
    metrics = train(tiny_model, tmp_path / "lora", "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
                    "--eval_before", "false")
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"] / 5
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    assert all(math.isfinite(x) for x in metrics["train_losses"])


def test_the_describe_task_trains_on_its_own_data_and_metric(tiny_model, tmp_path):
    metrics = train(tiny_model, tmp_path / "describe", "--task", "describe", "--save_strategy", "no")
    assert metrics["task"] == "describe" and len(metrics["train_losses"]) == 4
    after = metrics["after"]
    assert set(after) == {"synthetic", "probe"}  # no hand-written set: its input is a record, not written text
    assert "one_sentence" in after["synthetic"] and "valid_json" not in after["synthetic"]
    first = json.loads((tmp_path / "describe" / "predictions.jsonl").read_text().splitlines()[0])
    assert first["text"].startswith('{"name": ') and first["gold"].endswith(".")  # a record in, a sentence as gold


def test_packing_runs(tiny_model, tmp_path):
    metrics = train(tiny_model, tmp_path / "packed", "--packing", "true", "--eval_before", "false")
    assert len(metrics["train_losses"]) == 4 and all(math.isfinite(x) for x in metrics["train_losses"])


def one_line_error(result) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[-1]


def test_unknown_config_key_is_a_one_line_error(tiny_model, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rat: 1e-4\n")
    line = one_line_error(run_script(SCRIPT, "--config", str(config), "--output_dir", str(tmp_path / "o")))
    assert "learning_rat" in line


# Each bad input a new user tried ends in one line before any model is loaded. ftlab/startup.py
# and ftlab/data.py hold the checks; tests/test_startup.py covers every rule, these run the real script.
@pytest.mark.parametrize("args, says", [
    (["--config", "nope.yaml"], "nope.yaml: no such file"),
    (["--config", "02_sft/config.yaml", "--max_steps", "-5"], "--max_steps -5: must be a positive number"),
])
def test_bad_config_is_a_one_line_error(tmp_path, args, says):
    assert says in one_line_error(run_script(SCRIPT, *args, "--output_dir", str(tmp_path / "o")))


def test_yaml_syntax_error_is_a_one_line_error(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("max_steps: 20\nlearning_rate: [1e-4\n")
    line = one_line_error(run_script(SCRIPT, "--config", str(config), "--output_dir", str(tmp_path / "o")))
    assert "YAML syntax error" in line


def test_empty_train_file_is_a_one_line_error(tiny_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    line = one_line_error(run_script(SCRIPT, "--config", "02_sft/config.yaml", "--output_dir", str(tmp_path / "o"),
                                     "--model_name_or_path", str(tiny_model), "--train_file", str(empty)))
    assert "empty.jsonl: the file is empty" in line


def test_outside_the_virtual_environment_says_what_to_do(tmp_path):
    """`python3 02_sft/train.py` with a Python that lacks the packages (-S: no site-packages) gets one line."""
    result = subprocess.run([sys.executable, "-S", SCRIPT, "--config", "02_sft/config.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    line = one_line_error(result)
    assert "make setup" in line and "source .venv/bin/activate" in line


def test_missing_model_path_is_a_one_line_error(tmp_path):
    line = one_line_error(run_script(SCRIPT, "--config", "02_sft/config.yaml", "--output_dir", str(tmp_path / "o"),
                                     "--model_name_or_path", str(tmp_path / "no-such-model")))
    assert "model path not found" in line


def test_refuses_a_non_empty_output_dir(tiny_model, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    line = one_line_error(run_script(SCRIPT, "--config", "02_sft/config.yaml", "--output_dir", str(tmp_path),
                                     "--model_name_or_path", str(tiny_model)))
    assert "not empty" in line and (tmp_path / "keep.txt").exists()


def test_resume_without_a_checkpoint_is_a_one_line_error(tiny_model, tmp_path):
    line = one_line_error(run_script(SCRIPT, "--config", "02_sft/config.yaml", "--output_dir", str(tmp_path),
                                     "--model_name_or_path", str(tiny_model), "--resume", "true"))
    assert "no checkpoint" in line


@pytest.mark.slow
def test_real_model_learns_the_task(tmp_path):
    """`make demo`'s training on the embedded SmolLM2 must hold the bar measured for it, on hand-written text.

    The demo measured 57.5% exact on the 80 hand-written sentences and 60.0% on the synthetic eval split
    (02_sft/README.md); the bar leaves a margin for run-to-run noise of a few sentences. Eval-loss passes
    and checkpoints are off: they change no weight."""
    result = run_script(SCRIPT, "--config", "02_sft/config.yaml", "--output_dir", str(tmp_path / "real"),
                        "--eval_strategy", "no", "--save_strategy", "no", timeout=1500, threads=None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "real" / "metrics.json").read_text())
    before, after = metrics["before"], metrics["after"]
    for name in ("synthetic", "handwritten"):
        assert before[name]["exact_match"] == 0 and after[name]["valid_json"] >= 0.98, (name, after[name])
    assert after["handwritten"]["exact_match"] >= HANDWRITTEN_BAR, after["handwritten"]
    assert after["synthetic"]["exact_match"] >= SYNTHETIC_BAR, after["synthetic"]
