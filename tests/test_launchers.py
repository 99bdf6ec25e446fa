"""01_full_finetuning/train.py past one device, on the CPU: two processes talking over gloo.

Every launcher path the README shows runs here with the committed configs: accelerate with DDP, FSDP2,
DeepSpeed ZeRO-2 and ZeRO-3, the `deepspeed` launcher and `torchrun`. Each trains 2 processes x 4 rows,
which must give the losses of 1 process x 8 rows (test_full_finetuning's recorded run): splitting a batch
across processes changes where the work happens, not the maths. A ZeRO-3 checkpoint is turned back into
one plain state dict and must equal the model the run saved.

The first DeepSpeed run in an environment compiles a small communication op (~30-60 s) into .venv/torch_extensions;
later runs reuse it.
Launches take turns (a lock): they all bind the default port 29500, and two must not build that op at once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, aborted_after_finishing, one_at_a_time
from safetensors.torch import load_file
from test_full_finetuning import EXPECTED_LOSSES

from ftlab.platforms import installed

BIN = Path(sys.executable).parent
ARGS = ["--config", "01_full_finetuning/config.yaml", "--max_steps", "4", "--learning_rate", "1e-3",
        "--logging_steps", "1", "--per_device_train_batch_size", "4", "--eval_samples", "2", "--max_new_tokens", "8",
        "--probe_file", "none", "--handwritten_file", "none", "--bf16", "false", "--report_to", "none",
        "--eval_before", "false", "--save_strategy", "no"]


def launch(launcher: list[str], model, out, *extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           # unbuffered: a process that aborts at exit (see aborted_after_finishing) keeps what it printed
           "PYTHONUNBUFFERED": "1",
           # DeepSpeed's op build in this environment's own folder: ~/.cache/torch_extensions is shared with every
           # other environment on the machine, which rebuilds it (other paths) while a run here loads it.
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))}
    command = [*launcher, "01_full_finetuning/train.py", *ARGS, "--model_name_or_path", str(model),
               "--output_dir", str(out), *extra]
    with one_at_a_time("launchers"):  # every launcher binds port 29500: never two at once, whatever the --dist
        result = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True, timeout=600, check=False)
    assert result.returncode == 0 or aborted_after_finishing(result, out / "metrics.json"), \
        result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # only the first process reports
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def accelerate(config: str) -> list[str]:
    return [str(BIN / "accelerate"), "launch", "--config_file", f"configs/accelerate/{config}"]


needs_deepspeed = pytest.mark.skipif(not installed("deepspeed"), reason="DeepSpeed installs on Linux only")


@pytest.mark.parametrize("launcher, zero", [
    pytest.param(accelerate("multi_gpu.yaml"), 0, id="accelerate-ddp"),
    pytest.param([str(BIN / "torchrun"), "--nproc_per_node", "2"], 0, id="torchrun-ddp"),
    pytest.param(accelerate("fsdp2.yaml"), 3, id="accelerate-fsdp2"),  # full shard: the budget counts it as ZeRO-3
    pytest.param(accelerate("deepspeed_zero2.yaml"), 2, id="accelerate-zero2", marks=needs_deepspeed),
])
def test_two_processes_of_4_rows_train_like_one_of_8(tiny_model, tmp_path, launcher, zero):
    metrics = launch(launcher, tiny_model, tmp_path / "run")
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == zero
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)


@needs_deepspeed
def test_deepspeed_launcher_runs_zero2_from_the_json(tiny_model, tmp_path):
    metrics = launch([str(BIN / "deepspeed"), "--num_gpus", "2"], tiny_model, tmp_path / "run",
                     "--deepspeed", "configs/deepspeed/zero2.json")
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == 2
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)


@needs_deepspeed
def test_zero3_trains_and_its_checkpoint_reloads_into_a_plain_model(tiny_model, tmp_path):
    """ZeRO-3 shards every weight; a checkpoint holds the shards. DeepSpeed's zero_to_fp32 joins them into one
    state dict, which must equal the ordinary model.safetensors the run saved, and load into a plain model."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    metrics = launch(accelerate("deepspeed_zero3.yaml"), tiny_model, out, "--save_strategy", "steps",
                     "--save_steps", "4")
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == 3
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)
    assert metrics["total_parameters"] == sum(t.numel() for t in load_file(tiny_model / "model.safetensors").values())

    joined = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoint-4"))
    saved = load_file(out / "model.safetensors")
    assert set(saved) <= set(joined)
    assert all(torch.allclose(joined[name].float(), saved[name].float(), atol=1e-6) for name in saved)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model)
    missing, unexpected = plain.load_state_dict(joined, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embeddings
    before = load_file(tiny_model / "model.safetensors")
    assert not torch.equal(plain.model.layers[0].mlp.up_proj.weight, before["model.layers.0.mlp.up_proj.weight"])


def test_only_the_first_process_prints(monkeypatch):
    """`quiet_other_processes`: every process but the first sends its stdout nowhere, so a launch prints one copy."""
    from types import SimpleNamespace

    from ftlab.startup import quiet_other_processes

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # put back after the test
    first = sys.stdout
    assert quiet_other_processes(SimpleNamespace(process_index=0)) is True and sys.stdout is first
    assert quiet_other_processes(SimpleNamespace(process_index=1)) is False and sys.stdout.name == os.devnull
    sys.stdout.close()
