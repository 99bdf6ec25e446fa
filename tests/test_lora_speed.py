"""benchmarks/lora_speed.py (`make bench-gpu`) at a test-sized shape: each path trains and lands in the table."""

import re

import pytest
from conftest import run_script

from ftlab.platforms import installed


def bench(tmp_path, *paths: str):
    result = run_script("benchmarks/lora_speed.py", "--shape", "tiny", "--batch", "2", "--seq", "64", "--steps", "3",
                        "--out", str(tmp_path), "--paths", *paths)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "lora_speed.md").read_text(encoding="utf-8")
    return {m[1]: m[2] for m in re.finditer(r"^\| (.+?) \| (.+?) \|", table, re.MULTILINE)}, table


def numbers(row: str) -> bool:
    return re.fullmatch(r"[\d,]+", row) is not None


def test_cpu_paths_train_and_report_tokens_per_second(tmp_path):
    """PEFT LoRA and both QLoRA recipes run here and report tokens/s; Liger is listed with why it did not run."""
    rows, table = bench(tmp_path, "peft-lora", "peft-lora-liger", "peft-qlora-upcast", "peft-qlora")
    assert numbers(rows["transformers + PEFT LoRA (05 train.py)"])
    assert numbers(rows["transformers + PEFT QLoRA, prepare_model_for_kbit_training"])
    assert numbers(rows["transformers + PEFT QLoRA, nothing upcast (06 train.py)"])
    liger = rows["+ Liger RMSNorm, RoPE, SwiGLU (use_liger_kernel; TRL 1.15 keeps its own loss)"]
    assert liger.startswith("not run: Liger's kernels need an NVIDIA GPU")
    assert "Measured on CPU" in table and "--shape tiny --batch 2 --seq 64 --steps 3" in table
    # The two QLoRA recipes train the same 4-bit model on the same tokens: their losses agree closely.
    losses = [float(line.rsplit("|", 2)[1]) for line in table.splitlines() if "QLoRA" in line]
    assert len(losses) == 2 and abs(losses[0] - losses[1]) < 0.02, table


@pytest.mark.slow  # ~40 s; the Unsloth scripts themselves are trained in the default suite (test_peft_lora, test_qlora)
@pytest.mark.skipif(not installed("unsloth"), reason="Unsloth installs on Linux only (it needs Triton)")
def test_unsloth_paths_run_on_the_cpu_fallback(tmp_path):
    rows, _ = bench(tmp_path, "unsloth-lora", "unsloth-qlora")
    assert numbers(rows["Unsloth LoRA (05 train_unsloth.py)"]) and numbers(rows["Unsloth QLoRA (05 train_unsloth.py, 06's config)"])


@pytest.mark.gpu
def test_every_path_runs_on_a_gpu(tmp_path):
    rows, table = bench(tmp_path, "peft-lora", "peft-lora-liger", "unsloth-lora", "peft-qlora-upcast", "peft-qlora",
                        "unsloth-qlora")
    assert all(numbers(v) for k, v in rows.items() if k != "path" and not k.startswith("---")), table
