"""ftlab.platforms and pyproject.toml: the device choice on faked hardware, and the install on every platform.

The dependency checks ask uv to resolve pyproject.toml for each platform in the README's table, from
PyPI, as pip would there. Off Linux they also forbid building from source, so a pass means every package
has a wheel for that platform. They need PyPI: offline they skip, unless FTLAB_REQUIRE_NETWORK=1 (set by
.ci/run), where a check that cannot run fails.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_script

from ftlab import platforms
from ftlab.platforms import Hardware, choose
from ftlab.trl_cpu import triton_runs_on

ROOT = Path(__file__).resolve().parents[1]


T4, A100, H100 = (Hardware(cuda=True, cuda_capability=capability, cuda_name=name, cuda_count=1) for capability, name in
                  (((7, 5), "Tesla T4"), ((8, 0), "NVIDIA A100-SXM4-40GB"), ((9, 0), "NVIDIA H100 80GB HBM3")))


@pytest.mark.parametrize("hardware, device, precision", [
    (H100, "cuda", "bf16 autocast"),
    (A100, "cuda", "bf16 autocast"),
    (T4, "cuda", "fp16 autocast"),
    (Hardware(cuda=True, cuda_capability=(8, 6), cpu_bf16=False), "cuda", "bf16 autocast"),
    (Hardware(mps=True), "mps", "bf16 autocast"),
    (Hardware(cpu_bf16=True), "cpu", "bf16 autocast"),
    (Hardware(), "cpu", "fp32"),
])
def test_device_and_precision_follow_the_hardware(hardware, device, precision):
    choice = choose(hardware)
    assert (choice.device, choice.precision) == (device, precision)
    assert choice.dtype == {"bf16 autocast": "bfloat16", "fp16 autocast": "float16", "fp32": "float32"}[precision]
    assert choice.training_arguments() == {"use_cpu": device == "cpu", "bf16": precision.startswith("bf16"),
                                           "fp16": precision.startswith("fp16")}


@pytest.mark.parametrize("hardware", [A100, T4, Hardware(mps=True)])
@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_use_cpu_leaves_the_gpu_and_takes_the_cpus_precision(hardware, cpu_bf16):
    hardware = Hardware(**{**hardware.__dict__, "cpu_bf16": cpu_bf16})
    choice = choose(hardware, use_cpu=True)
    assert (choice.device, choice.bf16, choice.fp16) == ("cpu", cpu_bf16, False)


def test_a_t4_gets_fp16_although_torch_calls_it_bf16_capable(monkeypatch):
    """torch 2.14's is_bf16_supported() defaults to including_emulation=True and says True on a T4; detect() must
    decide by compute capability instead. Faked: a T4 that torch reports as bf16-capable."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90", "sm_100", "sm_120"])
    hardware = platforms.detect()
    assert (hardware.cuda, hardware.cuda_capability, hardware.cuda_bf16, hardware.cuda_problem) == (True, (7, 5), False, "")
    choice = choose(hardware)
    assert (choice.device, choice.bf16, choice.fp16, choice.dtype) == ("cuda", False, True, "float16")
    assert "Tesla T4, compute capability 7.5 < 8.0, has no bf16" == choice.why


def test_a_card_without_kernels_in_this_wheel_is_one_line(monkeypatch):
    """A V100 (7.0) under torch 2.14's CUDA 13 wheel (sm_75 and up): no kernels for it, so one line, not a crash later."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90", "sm_100", "sm_120"])
    hardware = platforms.detect()
    assert not hardware.cuda and "Tesla V100-SXM2-16GB (compute capability 7.0) has no kernels" in hardware.cuda_problem
    with pytest.raises(platforms.PlatformError, match="install a torch build that lists your card"):
        choose(hardware)
    assert choose(hardware, use_cpu=True).device == "cpu"  # --use_cpu true accepts the CPU run


@pytest.mark.parametrize("archs, capability, runs", [
    (["sm_75", "sm_80", "sm_90"], (7, 5), True), (["sm_75", "sm_80", "sm_90"], (8, 6), True),  # 8.0's cubin on 8.6
    (["sm_75", "sm_80"], (9, 0), False), (["sm_80", "compute_90"], (12, 0), True),  # PTX runs on newer cards
    (["sm_75", "sm_80"], (7, 0), False),
])
def test_kernels_for_a_capability(archs, capability, runs):
    assert platforms.has_kernels_for(capability, archs) is runs


def test_a_driver_too_old_for_the_wheel_is_one_line_naming_both(monkeypatch):
    """torch.cuda.is_available() is False with an old driver; the loaded NVIDIA driver shows a card is there."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # (the default suite hides CUDA: see the last check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    problem = platforms.cuda_problem(torch, driver="535.104.05")
    assert "driver 535.104.05" in problem and "CUDA 13.0" in problem and "update the driver" in problem
    assert "\n" not in problem and "--use_cpu true" in problem
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in platforms.cuda_problem(torch, driver="550.54")
    assert platforms.cuda_problem(torch, driver=None) == ""  # no NVIDIA driver: a CPU machine, nothing to say
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hidden on purpose (the default test suite): not a problem
    assert platforms.cuda_problem(torch, driver="535.104.05") == ""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(platforms.PlatformError, match="driver 535"):
        choose(Hardware(cuda_problem=platforms.cuda_problem(torch, driver="535.104.05")))


def test_several_gpus_under_plain_python_say_how_to_pick_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    two = Hardware(cuda=True, cuda_capability=(9, 0), cuda_count=2)
    problem = platforms.several_gpus_problem(two, "cuda")
    assert "2 GPUs are visible" in problem and "CUDA_VISIBLE_DEVICES=0" in problem and "accelerate launch" in problem
    assert platforms.several_gpus_problem(two, "cpu") == ""  # --use_cpu true
    assert platforms.several_gpus_problem(H100, "cuda") == ""
    monkeypatch.setenv("WORLD_SIZE", "2")  # one rank of accelerate launch / torchrun: each rank has its own GPU
    assert platforms.several_gpus_problem(two, "cuda") == ""


def test_detect_reads_this_machine():
    hardware = platforms.detect()
    assert hardware.cuda == torch.cuda.is_available()
    assert not (hardware.cuda and hardware.mps)
    assert hardware.cpu_bf16 == platforms.cpu_has_bf16()


def test_missing_names_the_platform_and_the_way_out(monkeypatch):
    assert platforms.missing("json") is None
    monkeypatch.setattr(platforms, "installed", lambda module: False)
    monkeypatch.setattr(platforms.sys, "platform", "win32")
    assert platforms.missing("unsloth").startswith(
        "Unsloth is not available on Windows")  # + machine, e.g. "Windows AMD64: it installs on Linux only"
    assert "it installs on Linux only (it needs Triton). Instead: run the PEFT version" in platforms.missing("unsloth")
    monkeypatch.setattr(platforms.sys, "platform", "linux")  # on Linux it was just not installed
    assert platforms.missing("unsloth") == ("Unsloth is not installed in this environment: pip install "
                                            "unsloth==2026.10.9, or run the PEFT version of the same lesson, "
                                            "or use Linux, WSL 2 or Colab")


def test_trl_triton_loss_only_where_triton_runs(monkeypatch):
    from trl.trainer import utils

    assert not triton_runs_on(torch.device("cpu"))
    assert not triton_runs_on(torch.device("mps"))  # macOS has no Triton: the Apple GPU takes our loss path
    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", object())
    assert triton_runs_on(torch.device("cuda"))
    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", None)  # a CUDA machine without Triton
    assert not triton_runs_on(torch.device("cuda"))


# ---- The scripts without the Linux-only packages, as on macOS or Windows ---------------------------------------
LINUX_ONLY_MODULES = ("triton", "deepspeed", "liger_kernel", "unsloth", "unsloth_zoo", "torchvision")


@pytest.fixture
def without_linux_only_packages(tmp_path):
    """Environment for a subprocess in which the Linux-only packages cannot be imported (a sitecustomize
    marks them missing), so this machine runs a script with the package set a Mac or Windows install has."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        f"import sys\nfor name in {LINUX_ONLY_MODULES!r}:\n    sys.modules[name] = None\n", encoding="utf-8")
    return {"PYTHONPATH": str(shim)}


def test_02_sft_trains_without_the_linux_only_packages(tiny_model, tmp_path, without_linux_only_packages):
    from test_sft import EXPECTED_LOSSES

    out = tmp_path / "run"
    result = run_script("02_sft/train.py", "--config", "02_sft/config.yaml", "--model_name_or_path", str(tiny_model),
                        "--output_dir", str(out), "--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps",
                        "1", "--eval_strategy", "no", "--save_strategy", "no", "--eval_samples", "4",
                        "--max_new_tokens", "8", "--bf16", "false", env=without_linux_only_packages)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)  # the same training as with them


def test_a_linux_only_feature_there_is_one_line(tiny_model, tmp_path, without_linux_only_packages):
    result = run_script("02_sft/train.py", "--config", "02_sft/config.yaml", "--output_dir", str(tmp_path / "o"),
                        "--deepspeed", "configs/deepspeed/zero2.json", env=without_linux_only_packages)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: DeepSpeed is not "), result.stderr
    assert "train without --deepspeed" in lines[0]


# ---- The install: pyproject.toml resolves on every platform of the README's table ---------------------------
PLATFORMS = {  # README row -> (uv's --python-platform, Python version)
    "Linux x86_64": ("x86_64-manylinux_2_28", "3.11"),
    "Linux aarch64": ("aarch64-manylinux_2_28", "3.11"),
    "macOS arm64": ("aarch64-apple-darwin", "3.11"),
    "macOS arm64, Python 3.13": ("aarch64-apple-darwin", "3.13"),
    "Windows x86_64": ("x86_64-pc-windows-msvc", "3.11"),
    "Colab (Linux x86_64, Python 3.12)": ("x86_64-manylinux_2_28", "3.12"),
}
LINUX_ONLY = {"deepspeed", "unsloth", "unsloth-zoo", "liger-kernel", "triton"}


def resolve(target: str, python: str) -> set[str]:
    """Package names uv resolves pyproject.toml (with the dev extra) to for `target`, or fail with uv's reason."""
    linux = "linux" in target
    command = [sys.executable, "-m", "uv", "pip", "compile", str(ROOT / "pyproject.toml"), "--extra", "dev",
               "--python-platform", target, "--python-version", python, "--quiet", "--no-header",
               "--no-annotate", "--no-config", "--index-url", "https://pypi.org/simple",
               # Off Linux every package must come as a wheel; on Linux only DeepSpeed builds (pure Python).
               *(["--only-binary", ":all:", "--no-binary", "deepspeed"] if linux else ["--no-build"])]
    # torch's macOS wheels are for macOS 14+; uv resolves for another Python without downloading one.
    env = {**os.environ, "MACOSX_DEPLOYMENT_TARGET": "14.0", "UV_PYTHON_DOWNLOADS": "never"}
    if importlib.util.find_spec("uv") is None:
        pytest.fail("uv is missing: it is in the dev extra; run `make setup`")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    if done.returncode and "No solution found" not in done.stderr:
        reason = f"could not reach PyPI to resolve for {target}: {done.stderr.strip().splitlines()[-1:]}"
        if os.environ.get("FTLAB_REQUIRE_NETWORK") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert done.returncode == 0, f"pyproject.toml does not resolve for {target}, Python {python}:\n{done.stderr}"
    return {re.split(r"[=\s;]", line, maxsplit=1)[0].lower().replace("_", "-")
            for line in done.stdout.splitlines() if line and not line.startswith("#")}


@pytest.mark.parametrize("row", PLATFORMS)
def test_dependencies_resolve(row):
    target, python = PLATFORMS[row]
    packages = resolve(target, python)
    assert {"torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "pytest"} <= packages
    linux_only = LINUX_ONLY & packages
    assert linux_only == (LINUX_ONLY if "linux" in target else set()), linux_only


def test_the_default_suite_hides_cuda_and_the_gpu_run_does_not():
    """tests/conftest.py: CUDA hidden unless `-m` selects the gpu tests, so `make test` on a GPU machine stays on
    the CPU (its recorded losses are CPU numbers); `make test-gpu` sees the GPU."""
    from conftest import gpu_selected

    assert os.environ.get("CUDA_VISIBLE_DEVICES") == "" and not torch.cuda.is_available()
    assert not gpu_selected("not slow and not notebooks") and not gpu_selected("not gpu")
    assert gpu_selected("gpu") and gpu_selected("gpu and not slow")
