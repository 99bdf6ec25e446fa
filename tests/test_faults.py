"""What happens to learners' runs (ftlab/checkpoints.py), each on 02_sft/train.py and the tiny model, in a real
subprocess: killed, killed while saving, a broken checkpoint, Ctrl-C (once and twice), two runs on one folder, a
disk that is full before or during training, a loss that turns NaN. Every training script goes through the same
start-up and `protect(trainer)` (tests/test_lesson_scripts.py checks that each calls them).

Three of them (a half-written checkpoint resumed, a second Ctrl-C, a second run beside a training one) are `slow`:
the default suite checks the same code in process, and `make test-slow` runs them whole.

Where a fault must land at a moment (a kill after the first checkpoint, a Ctrl-C mid-run), the script runs through a
small runner that slows each optimizer step (or fakes the full disk) and then runs the script unchanged (runpy).
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_script

from ftlab.checkpoints import LOCK_NAME, checkpoint_problem

SCRIPT = "02_sft/train.py"

# Patches applied before the script runs: `slow` makes each step take 0.4 s (or $STEP_SECONDS); `disk_full` makes the second weights
# file written fail as a full disk does; `no_space` reports 1 kB free.
RUNNER = """
import errno, os, runpy, shutil, sys, time

fault = os.environ["FAULT"]
if fault == "slow":
    import transformers.trainer_callback as tc

    on_step_end = tc.CallbackHandler.on_step_end

    def slow(self, *args, **kwargs):
        time.sleep(float(os.environ.get("STEP_SECONDS", "0.4")))
        return on_step_end(self, *args, **kwargs)

    tc.CallbackHandler.on_step_end = slow
elif fault == "disk_full":
    import safetensors.torch

    save_file, calls = safetensors.torch.save_file, []

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_file(*args, **kwargs)

    safetensors.torch.save_file = full  # before transformers imports it
elif fault == "no_space":
    usage = shutil.disk_usage
    shutil.disk_usage = lambda path: usage(path)._replace(free=1000)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def args(model, out, *extra) -> list[str]:
    return ["--config", "02_sft/config.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "1", "--eval_strategy", "no",
            "--save_steps", "2", "--save_total_limit", "2", "--eval_samples", "4", "--max_new_tokens", "8",
            "--eval_before", "false", "--probe_file", "none", "--handwritten_file", "none", "--bf16", "false",
            "--report_to", "tensorboard", *extra]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def start(fault: str, *script_args, step_seconds: float = 0.4) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, SCRIPT, *script_args], cwd=ROOT, text=True,
                            env={**env(), "FAULT": fault, "STEP_SECONDS": str(step_seconds)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_with(fault: str, *script_args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, SCRIPT, *script_args], cwd=ROOT, text=True, timeout=600,
                          env={**env(), "FAULT": fault}, capture_output=True, check=False)


def wait_for(path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def error_line(stderr: str) -> str:
    """The run's one `error:` line (a progress bar may be closed after it), and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def losses(out) -> list[float]:
    return json.loads((out / "metrics.json").read_text())["train_losses"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory):
    """The run every interrupted one must end up equal to: 4 steps, checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("faults") / "whole"
    result = run_script(SCRIPT, *args(tiny_model, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def copy_run(source, tmp_path, checkpoints=("checkpoint-2", "checkpoint-4")):
    import shutil

    out = tmp_path / "run"
    out.mkdir()
    for name in checkpoints:
        shutil.copytree(source / name, out / name)
    return out


def test_killed_after_a_checkpoint_resumes_to_the_same_losses(uninterrupted, tiny_model, tmp_path):
    out = tmp_path / "killed"
    process = start("slow", *args(tiny_model, out))
    wait_for(out / "checkpoint-2" / "trainer_state.json", process)
    process.send_signal(signal.SIGKILL)  # kill -9: no handler runs, the lock stays behind
    process.communicate()
    assert process.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == process.pid  # a stale lock: it must not block

    again = run_script(SCRIPT, *args(tiny_model, out, "--resume", "true"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "taking over the lock" in again.stdout and f"continuing from {out / 'checkpoint-2'}" in again.stdout
    assert losses(out) == pytest.approx(losses(uninterrupted), abs=1e-5)
    assert not (out / LOCK_NAME).exists()  # released at exit


def cut(file, keep: int | None = None, drop: int = 64):
    with open(file, "r+b") as f:
        f.truncate(keep if keep is not None else file.stat().st_size - drop)


@pytest.mark.slow  # (the check itself runs in the default suite, in process: test_each_file_of_a_checkpoint_is_checked)
def test_a_half_written_newest_checkpoint_is_set_aside_and_the_one_before_resumes(uninterrupted, tiny_model, tmp_path):
    out = copy_run(uninterrupted, tmp_path)
    newest = out / "checkpoint-4"
    (newest / "trainer_state.json").unlink()  # killed while writing: transformers writes trainer_state.json last
    cut(newest / "optimizer.pt", keep=100)
    result = run_script(SCRIPT, *args(tiny_model, out, "--resume", "true"))
    assert result.returncode == 0, result.stderr[-3000:]
    said = next(line for line in result.stdout.splitlines() if line.startswith("resume: checkpoint-4/"))
    assert "trainer_state.json is missing" in said
    assert f"continuing from {out / 'checkpoint-2'}" in result.stdout
    assert (out / "broken-checkpoint-4").is_dir() and checkpoint_problem(out / "checkpoint-4") is None
    assert losses(out) == pytest.approx(losses(uninterrupted), abs=1e-5)


@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                  "trainer_state.json"])
def test_each_file_of_a_checkpoint_is_checked(uninterrupted, tmp_path, file):
    """The same check, file by file, in this process (prepare_output_dir runs it before every resume)."""
    from ftlab.checkpoints import usable_checkpoint

    out = copy_run(uninterrupted, tmp_path)
    assert checkpoint_problem(out / "checkpoint-4") is None
    cut(out / "checkpoint-4" / file, drop=5)
    assert file in checkpoint_problem(out / "checkpoint-4")
    assert usable_checkpoint(out) == out / "checkpoint-2" and (out / "broken-checkpoint-4").is_dir()


def test_no_whole_checkpoint_is_one_line(uninterrupted, tmp_path, capsys):
    from ftlab.startup import prepare_output_dir

    out = copy_run(uninterrupted, tmp_path, ["checkpoint-2"])
    cut(out / "checkpoint-2" / "trainer_state.json", drop=5)
    with pytest.raises(SystemExit, match="error: --resume: no whole checkpoint left"):
        prepare_output_dir(str(out), overwrite=False, resume=True)
    assert "checkpoint-2/trainer_state.json is cut short" in capsys.readouterr().out


def test_ctrl_c_saves_says_how_to_continue_and_that_command_finishes_the_run(uninterrupted, tiny_model, tmp_path):
    out = tmp_path / "interrupted"
    process = start("slow", *args(tiny_model, out, "--save_steps", "100"))
    wait_for(out / "runs", process)  # TensorBoard's folder: training has begun
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert "Ctrl-C: saving a checkpoint" in stdout
    command = stdout.splitlines()[stdout.splitlines().index("continue with:") + 1].strip()
    saved = [p for p in out.glob("checkpoint-*")]
    assert len(saved) == 1 and checkpoint_problem(saved[0]) is None and not (out / "metrics.json").exists()

    words = shlex.split(command)
    assert words[:2] == ["python", SCRIPT] and words[-2:] == ["--resume", "true"]
    again = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, env=env(), text=True, capture_output=True,
                           timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert losses(out) == pytest.approx(losses(uninterrupted), abs=1e-5)


@pytest.mark.slow  # a 3 s step by design
def test_a_second_ctrl_c_stops_at_once(tiny_model, tmp_path):
    out = tmp_path / "twice"
    process = start("slow", *args(tiny_model, out, "--save_steps", "100", "--max_steps", "50"), step_seconds=3)
    wait_for(out / "runs", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    while "Ctrl-C: saving a checkpoint" not in process.stdout.readline():  # the first one is taken...
        assert process.poll() is None
    process.send_signal(signal.SIGINT)  # ... and the second comes while the step (3 s) is still running
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and error_line(stderr).startswith("error: stopped (Ctrl-C)")
    assert not list(out.glob("checkpoint-*"))  # stopped before the step could save


@pytest.mark.slow  # (a live lock refused before anything is deleted: the default suite's stale-lock test, in process)
def test_a_second_run_on_the_same_folder_refuses_and_the_first_goes_on(tiny_model, tmp_path):
    out = tmp_path / "shared"
    first = start("slow", *args(tiny_model, out), step_seconds=3)  # still training while the second starts
    wait_for(out / LOCK_NAME, first)
    second = run_script(SCRIPT, *args(tiny_model, out, "--overwrite_output_dir", "true"))
    line = error_line(second.stderr)
    assert second.returncode == 1 and f"in use by process {first.pid}" in line
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]  # nothing of the first run was deleted
    assert (out / "metrics.json").exists() and (out / "checkpoint-4").is_dir()


def test_a_stale_lock_from_another_machine_or_a_dead_process_does_not_block(tmp_path, capsys):
    """A lock whose process has ended, or one taken on another machine (a Colab runtime that is gone, its runs/
    on Drive): the next run takes it over. (The killed-run test above does it through a real `kill -9`.)"""
    from ftlab.checkpoints import RunInUse, holder
    from ftlab.startup import prepare_output_dir

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        locks = {"live": {"pid": sleeper.pid, "host": socket.gethostname()},
                 "dead": {"pid": dead.pid, "host": socket.gethostname()},
                 "another machine": {"pid": sleeper.pid, "host": "a-colab-runtime-that-is-gone"}}
        for name, lock in locks.items():
            out = tmp_path / name.replace(" ", "_")
            out.mkdir()
            (out / LOCK_NAME).write_text(json.dumps(lock))
            assert (holder(out) is not None) == (name == "live"), name
        with pytest.raises(RunInUse, match=f"in use by process {sleeper.pid}"):
            prepare_output_dir(str(tmp_path / "live"), overwrite=True, resume=False)
        assert (tmp_path / "live" / LOCK_NAME).exists()  # nothing was deleted
        prepare_output_dir(str(tmp_path / "dead"), overwrite=True, resume=False)
        assert "taking over the lock" in capsys.readouterr().out
        assert json.loads((tmp_path / "dead" / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()


def test_a_full_disk_while_saving_is_one_line_and_the_previous_checkpoint_is_intact(tiny_model, tmp_path):
    out = tmp_path / "full"
    result = run_with("disk_full", *args(tiny_model, out))
    line = error_line(result.stderr)
    assert result.returncode == 1
    assert f"no space left on the disk while writing to {out}" in line and "a checkpoint of this run needs ~" in line
    assert "checkpoint-2, is intact" in line and line.endswith("--resume true")
    assert checkpoint_problem(out / "checkpoint-2") is None


def test_a_run_whose_checkpoints_cannot_fit_stops_before_training(tiny_model, tmp_path):
    out = tmp_path / "small_disk"
    result = run_with("no_space", *args(tiny_model, out))
    line = error_line(result.stderr)
    assert result.returncode == 1 and f"output_dir {out}: this run needs ~" in line and "0.00 MB free" in line
    assert "checkpoint(s) of" in line and "--save_total_limit 1" in line
    assert not (out / "runs").exists() and not list(out.glob("checkpoint-*"))  # training never began


def test_a_loss_gone_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "nan"
    result = run_script(SCRIPT, *args(tiny_model, out, "--learning_rate", "1e6", "--warmup_steps", "0",
                                      "--save_steps", "1", "--max_steps", "12"))
    line = error_line(result.stderr)
    assert result.returncode == 1 and "became" in line and "at step 2" in line, line
    assert "checkpoint-1 is the last good checkpoint" in line and "learning rate too high" in line
    assert checkpoint_problem(out / "checkpoint-1") is None and not (out / "checkpoint-2").exists()
