"""What runs where: the device and number format a script trains in, and the packages only some platforms have.

    from ftlab.platforms import choose, detect

    choice = choose(detect())          # Choice(device="cuda", bf16=True, fp16=False, why="...")
    choice.training_arguments()        # {"use_cpu": False, "bf16": True, "fp16": False}

One decision for every script, made from the hardware (`ftlab.startup.parse_config` applies it as the
defaults of the `TrainingArguments` keys, so `--use_cpu true`, `--bf16 false` or `--fp16 true` override it):

| hardware                    | device | number format while training                                    |
|-----------------------------|--------|----------------------------------------------------------------|
| NVIDIA GPU, Ampere or newer | cuda   | bf16 autocast: fp32's range, half the bytes, no loss scaling    |
| older NVIDIA GPU (T4, V100) | cuda   | fp16 autocast with loss scaling (they have no bf16 arithmetic)  |
| Apple GPU (M1 and later)    | mps    | bf16 autocast (PyTorch needs macOS 14+, which torch's wheels need too) |
| CPU with AVX512-BF16 or AMX | cpu    | bf16 autocast: ~1.4x fp32 on this project's CPU                 |
| any other CPU               | cpu    | fp32: bf16 would be emulated, slower than fp32                  |

In every case the weights stay in the dtype the config loads them in (fp32 in our configs) and autocast
runs the matrix multiplications in the narrower format; the before/after scores run on the same device.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    """What the machine offers; `detect()` reads it, tests build it by hand."""

    cuda: bool = False
    cuda_bf16: bool = False  # Ampere (sm80) or newer
    cuda_name: str = ""
    mps: bool = False        # an Apple GPU that PyTorch can use
    cpu_bf16: bool = False   # x86 AVX512-BF16 or AMX: native bf16 matmuls


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (x86 AVX512-BF16 or AMX): there bf16 autocast is ~1.4x fp32.

    Elsewhere bf16 on a CPU is emulated and slower than fp32, so it is detected, not assumed."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPUID checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def detect() -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    mps = not cuda and torch.backends.mps.is_available()
    return Hardware(cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
                    cuda_name=torch.cuda.get_device_name() if cuda else "", mps=mps, cpu_bf16=cpu_has_bf16())


def precision_name(bf16: bool, fp16: bool) -> str:
    """How a run with these `TrainingArguments` flags computes: "bf16 autocast", "fp16 autocast" or "fp32"."""
    return "bf16 autocast" if bf16 else "fp16 autocast" if fp16 else "fp32"


@dataclass(frozen=True)
class Choice:
    device: str  # "cuda", "mps" or "cpu"
    bf16: bool
    fp16: bool
    why: str

    @property
    def precision(self) -> str:
        return precision_name(self.bf16, self.fp16)

    def training_arguments(self) -> dict:
        """The `TrainingArguments` keys that carry this choice (transformers picks cuda, then mps, unless use_cpu)."""
        return {"use_cpu": self.device == "cpu", "bf16": self.bf16, "fp16": self.fp16}


def choose(hardware: Hardware, *, use_cpu: bool = False) -> Choice:
    """The device and number format for training on `hardware`; `use_cpu` keeps a GPU machine on its CPU."""
    if hardware.cuda and not use_cpu:
        if hardware.cuda_bf16:
            return Choice("cuda", True, False, f"{hardware.cuda_name or 'CUDA GPU'} has bf16")
        return Choice("cuda", False, True, f"{hardware.cuda_name or 'CUDA GPU'} has no bf16 (pre-Ampere)")
    if hardware.mps and not use_cpu:
        return Choice("mps", True, False, "Apple GPU; bf16 needs macOS 14+")
    if hardware.cpu_bf16:
        return Choice("cpu", True, False, "CPU with native bf16 (AVX512-BF16/AMX)")
    return Choice("cpu", False, False, "CPU without native bf16: emulated bf16 is slower than fp32")


# ---- Packages only some platforms have ------------------------------------------------------------------
# pyproject.toml installs these on Linux only (they need Triton, which ships Linux wheels only, or build from
# source). A script that needs one checks first and names the way out, instead of an ImportError traceback.
# module -> (name, why Linux only, pip requirement, what to do instead)
LINUX_ONLY = {
    "liger_kernel": ("Liger Kernel", "its kernels are written in Triton", "liger-kernel==0.8.5",
                     "leave use_liger_kernel off (the default)"),
    "unsloth": ("Unsloth", "it needs Triton", "unsloth==2026.10.9",
                "run the PEFT version of the same lesson, or use Linux, WSL 2 or Colab"),
    "deepspeed": ("DeepSpeed", "it builds from source", "deepspeed==0.19.8",
                  "train without --deepspeed, or use Linux, WSL 2 or Colab"),
}


def platform_name() -> str:
    system = {"darwin": "macOS", "win32": "Windows", "linux": "Linux"}.get(sys.platform, sys.platform)
    return f"{system} {platform.machine()}"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing(module: str) -> str | None:
    """None when `module` can be imported here, else one line: why it is missing and the way out."""
    if installed(module):
        return None
    name, why, requirement, instead = LINUX_ONLY.get(module, (module, "", module, "see README.md, Platforms"))
    if why and sys.platform != "linux":
        return f"{name} is not available on {platform_name()}: it installs on Linux only ({why}). Instead: {instead}"
    return f"{name} is not installed in this environment: pip install {requirement}, or {instead}"
