"""What runs where: the device and number format a script trains in, and the packages only some platforms have.

    from ftlab.platforms import choose, detect

    choice = choose(detect())          # Choice(device="cuda", bf16=True, fp16=False, why="...")
    choice.training_arguments()        # {"use_cpu": False, "bf16": True, "fp16": False}

One decision for every script, made from the hardware (`ftlab.startup.parse_config` applies it as the
defaults of the `TrainingArguments` keys, so `--use_cpu true`, `--bf16 false` or `--fp16 true` override it):

| hardware                    | device | number format while training                                    |
|-----------------------------|--------|----------------------------------------------------------------|
| NVIDIA GPU, capability 8.0+ | cuda   | bf16 autocast: fp32's range, half the bytes, no loss scaling    |
| older NVIDIA GPU (T4: 7.5)  | cuda   | fp16 autocast with loss scaling (no bf16 arithmetic)            |
| Apple GPU (M1 and later)    | mps    | bf16 autocast (PyTorch needs macOS 14+, which torch's wheels need too) |
| CPU with AVX512-BF16 or AMX | cpu    | bf16 autocast: ~1.4x fp32 on this project's CPU                 |
| any other CPU               | cpu    | fp32: bf16 would be emulated, slower than fp32                  |

In every case the weights stay in the dtype the config loads them in (fp32 in our configs) and autocast
runs the matrix multiplications in the narrower format; the before/after scores run on the same device.
The compute capability decides bf16 on NVIDIA cards (8.0+), and everything downstream follows `Choice.dtype`:
on a T4 a config's `dtype: bfloat16` (weights, bitsandbytes' compute dtype, Unsloth's dtype) becomes float16,
and start-up says so. An NVIDIA card that this torch cannot use (a driver older than the wheel's CUDA, a card
the wheel has no kernels for, such as a V100 under torch 2.14's CUDA 13 wheel) stops the run in one line with
the likely cause and the fix, instead of training on the CPU unnoticed; so does plain `python` on a machine
with several GPUs (pick one with CUDA_VISIBLE_DEVICES, or `accelerate launch`).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ftlab.errors import LearnerError

# bf16 arithmetic on NVIDIA GPUs starts with Ampere (compute capability 8.0: A100, RTX 30xx, A10, L4, H100).
# torch.cuda.is_bf16_supported() is not the test: in torch 2.14 it defaults to including_emulation=True, which is
# True on a T4 (7.5) because a bf16 tensor can be created there; its matmuls are then emulated, and Unsloth (which
# decides by capability, as here) refuses the run. So the capability decides, in this one place.
BF16_CAPABILITY = (8, 0)


class PlatformError(LearnerError, RuntimeError):
    """This machine cannot run what was asked (an NVIDIA card torch cannot use, several GPUs with plain python);
    the message is the one line a learner sees."""


@dataclass(frozen=True)
class Hardware:
    """What the machine offers; `detect()` reads it, tests build it by hand."""

    cuda: bool = False
    cuda_capability: tuple[int, int] = (0, 0)  # (7, 5) on a T4, (8, 0) A100, (9, 0) H100
    cuda_name: str = ""
    cuda_count: int = 0      # GPUs visible to this process (CUDA_VISIBLE_DEVICES narrows it)
    cuda_problem: str = ""   # an NVIDIA card is there but torch cannot use it: why, and the fix
    mps: bool = False        # an Apple GPU that PyTorch can use
    cpu_bf16: bool = False   # x86 AVX512-BF16 or AMX: native bf16 matmuls

    @property
    def cuda_bf16(self) -> bool:
        return self.cuda and self.cuda_capability >= BF16_CAPABILITY


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (x86 AVX512-BF16 or AMX): there bf16 autocast is ~1.4x fp32.

    Elsewhere bf16 on a CPU is emulated and slower than fp32, so it is detected, not assumed."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPUID checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def has_kernels_for(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch build compiled for `arch_list` (torch.cuda.get_arch_list(): "sm_75", ..., "compute_120")
    runs on a card of `capability`: a cubin runs on its major version from its minor up, PTX on anything newer."""
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit():
            continue
        built = (int(number[:-1]), int(number[-1]))
        if (kind == "sm" and built[0] == major and built[1] <= minor) or (kind == "compute" and built <= capability):
            return True
    return False


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version ("535.104.05") when one is loaded, else None (Linux; elsewhere None)."""
    version = Path("/proc/driver/nvidia/version")
    if not version.exists():
        return None
    text = version.read_text(errors="replace")
    found = next(iter(re.findall(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", text)), None)
    return found or "unknown"


def cuda_problem(torch, driver: str | None) -> str:
    """Why an NVIDIA card that is present cannot be used by this torch, in one line with the fix ("" if it can)."""
    if torch.cuda.is_available():
        capability = torch.cuda.get_device_capability()
        if not has_kernels_for(capability, torch.cuda.get_arch_list()):
            name = torch.cuda.get_device_name()
            return (f"{name} (compute capability {capability[0]}.{capability[1]}) has no kernels in this torch "
                    f"{torch.__version__} (built for {' '.join(torch.cuda.get_arch_list())}): install a torch build "
                    "that lists your card's sm_ (an older CUDA wheel, from the command pytorch.org gives), or pass "
                    "--use_cpu true to train on the CPU")
        return ""
    if driver is None:  # no NVIDIA driver loaded: no card, or a card without its driver (nothing torch can do)
        return ""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):  # hidden on purpose (the test suite)
        return ""
    if torch.version.cuda is None:
        return (f"an NVIDIA GPU is here (driver {driver}) but this torch {torch.__version__} is a CPU-only build: "
                "install torch's CUDA build (the command pytorch.org gives), or pass --use_cpu true")
    return (f"an NVIDIA GPU is here (driver {driver}) but torch {torch.__version__} cannot use it: the likely cause is a "
            f"driver too old for the CUDA {torch.version.cuda} this wheel was built with; update the driver (nvidia-smi "
            "shows the CUDA version it supports), or install a torch build for that older CUDA (pytorch.org), or pass "
            "--use_cpu true to train on the CPU")


def detect() -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    mps = not cuda and torch.backends.mps.is_available()
    problem = cuda_problem(torch, nvidia_driver())
    return Hardware(cuda=cuda and not problem,
                    cuda_capability=torch.cuda.get_device_capability() if cuda else (0, 0),
                    cuda_name=torch.cuda.get_device_name() if cuda else "",
                    cuda_count=torch.cuda.device_count() if cuda else 0, cuda_problem=problem,
                    mps=mps, cpu_bf16=cpu_has_bf16())


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

    @property
    def dtype(self) -> str:
        """The 16-bit format this choice computes in, as a torch dtype name: what a config's `dtype:`, bitsandbytes'
        compute dtype, Unsloth's dtype and a model loaded only to run (scoring, chat, export) should use."""
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"

    def training_arguments(self) -> dict:
        """The `TrainingArguments` keys that carry this choice (transformers picks cuda, then mps, unless use_cpu)."""
        return {"use_cpu": self.device == "cpu", "bf16": self.bf16, "fp16": self.fp16}


def choose(hardware: Hardware, *, use_cpu: bool = False) -> Choice:
    """The device and number format for training on `hardware`; `use_cpu` keeps a GPU machine on its CPU.

    An NVIDIA card that torch cannot use is a `PlatformError` (one line: the likely cause and the fix), not a
    quiet run on the CPU that takes ten times as long; `use_cpu` accepts that run."""
    if hardware.cuda_problem and not use_cpu:
        raise PlatformError(hardware.cuda_problem)
    if hardware.cuda and not use_cpu:
        name = hardware.cuda_name or "CUDA GPU"
        capability = ".".join(map(str, hardware.cuda_capability))
        if hardware.cuda_bf16:
            return Choice("cuda", True, False, f"{name}, compute capability {capability}, has bf16")
        return Choice("cuda", False, True, f"{name}, compute capability {capability} < 8.0, has no bf16")
    if hardware.mps and not use_cpu:
        return Choice("mps", True, False, "Apple GPU; bf16 needs macOS 14+")
    if hardware.cpu_bf16:
        return Choice("cpu", True, False, "CPU with native bf16 (AVX512-BF16/AMX)")
    return Choice("cpu", False, False, "CPU without native bf16: emulated bf16 is slower than fp32")


def choose_to_run(use_cpu: bool = False) -> Choice:
    """`choose(detect())` for a script that only runs models (merging, quantizing, exporting, chatting) and has no
    --use_cpu: an NVIDIA card that torch cannot use leaves it on the CPU, with that reason as `why` (the device
    line then says why the GPU is not used) instead of stopping it."""
    hardware = detect()
    choice = choose(hardware, use_cpu=use_cpu or bool(hardware.cuda_problem))
    return replace(choice, why=hardware.cuda_problem) if hardware.cuda_problem else choice


def launched_distributed() -> bool:
    """Whether this process is one rank of `accelerate launch` / `torchrun` / `deepspeed` (they set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def several_gpus_problem(hardware: Hardware, device: str) -> str:
    """One line for plain `python` on a machine with several visible GPUs ("" otherwise): transformers' Trainer
    would wrap the model in DataParallel (slow, and TRL's trainers refuse it with a traceback)."""
    if device != "cuda" or hardware.cuda_count <= 1 or launched_distributed():
        return ""
    script = Path(sys.argv[0]).as_posix() if sys.argv and sys.argv[0] else "train.py"
    return (f"{hardware.cuda_count} GPUs are visible and plain python trains on one: pick it with "
            f"CUDA_VISIBLE_DEVICES=0 python {script} ..., or use them all with accelerate launch --config_file "
            f"configs/accelerate/multi_gpu.yaml {script} ... (configs/README.md)")


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
