"""What a training run used: its parameters, its peak memory, and the devices it trained on.

    from ftlab.resources import measure_training

    measure_training(trainer)          # peak memory counts from here; parameter devices noted at each step
    result = trainer.train(...)        # result.metrics["train_runtime"]: the wall time, in seconds
    peak_memory()                      # {"device": "cpu", "peak_gib": 1.9}

Measurement only; `ftlab.report` writes what is measured here into metrics.json, and `ftlab.memory`
estimates what a run should need before it starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import TrainerCallback


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts. For 4-bit weights each stored element holds two values; under
    DeepSpeed ZeRO-3 a process holds only a shard of each weight, and `ds_numel` is the whole weight's size."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel()) * (2 if p.dtype == torch.uint8 and hasattr(p, "quant_state") else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


# What `measure_training` saw of the run it measured: the device it trained on, and where its trainable parameters were at
# each optimizer step (a run can say "cuda" in its arguments and still hold its weights on the CPU).
TRAINED_ON: dict = {}


class RecordParameterDevices(TrainerCallback):
    """Notes the step training starts from, and the trainable parameters' devices at every optimizer step."""

    def on_train_begin(self, args, state, control, **kwargs):
        TRAINED_ON["first_step"] = state.global_step  # a resumed run's state is loaded by then

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            seen = {p.device.type for p in model.parameters() if p.requires_grad}
            TRAINED_ON["parameters"] = sorted(set(TRAINED_ON.get("parameters", [])) | seen)


def measure_training(trainer) -> None:
    """Call right before `trainer.train()`. From then on `peak_memory()` reports training (the counter of the
    training device is reset: loading and scoring before it do not count), and `TRAINED_ON` records the device
    trained on, the step training started from (above 0 when resumed), and the devices of the trainable
    parameters at every optimizer step. On a GPU it first prints whether the run should fit (`ftlab.memory`)."""
    TRAINED_ON.clear()
    TRAINED_ON["device"] = trainer.args.device.type
    if TRAINED_ON["device"] == "cuda":  # will it fit? the estimate against a T4, a 24 GB card and this GPU
        from ftlab.memory import fit_report_for

        try:
            print(fit_report_for(trainer))
        except (ValueError, TypeError, AttributeError) as e:  # a model the calculator cannot shape: say so, train on
            print(f"memory estimate (ftlab.memory): not available for this model ({e})")
    trainer.add_callback(RecordParameterDevices())
    reset_peak_memory(TRAINED_ON["device"])


def resumed() -> bool:
    """Whether the last measured run continued a checkpoint (it started after step 0)."""
    return TRAINED_ON.get("first_step", 0) > 0


def folder_megabytes(folder: Path, pattern: str = "*") -> float:
    """Size on disk of the files in `folder` matching `pattern`, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(folder).glob(pattern) if f.is_file()) / 1e6


# Linux keeps a process's peak resident set as VmHWM in /proc/self/status, and resets it to the current size
# when "5" is written to /proc/self/clear_refs: the CPU's counterpart of torch.cuda.reset_peak_memory_stats.
PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def memory_device(device: str | None = None) -> str:
    """Whose memory to read: `device` ("cuda", "mps", "cpu"), else the device the last measured run trained on, else
    the GPU if one is visible. A run kept on the CPU of a GPU machine (--use_cpu true) reads the CPU's memory."""
    device = device or TRAINED_ON.get("device")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return device


def reset_peak_memory(device: str | None = None) -> None:
    """Start the peak-memory counter again from what is held now (CUDA; the CPU on Linux; elsewhere a no-op)."""
    if memory_device(device) == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif PROC_CLEAR_REFS.exists():
        try:
            PROC_CLEAR_REFS.write_text("5")
        except OSError:  # a kernel or sandbox that refuses it: the peak then counts from the process start
            pass


def peak_memory(device: str | None = None) -> dict:
    """Peak memory since the last reset (see `measure_training`), in GiB: GPU tensors allocated on CUDA, Metal's
    allocation on an Apple GPU, else the process's peak resident set (weights, activations, optimizer and
    Python itself; on macOS and Windows since the process started)."""
    device = memory_device(device)
    if device == "cuda":
        return {"device": "cuda", "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    if device == "mps":  # MPS keeps no peak counter: what Metal holds for us now, at the end
        return {"device": "mps", "peak_gib": torch.mps.driver_allocated_memory() / 2**30}
    if PROC_STATUS.exists():
        hwm = next((line.split()[1] for line in PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:")), None)
        if hwm is not None:
            return {"device": "cpu", "peak_gib": int(hwm) * 1024 / 2**30}  # reported in kB
    if sys.platform == "win32":  # no `resource` module on Windows; psutil (an accelerate dependency) reads it
        import psutil

        return {"device": "cpu", "peak_gib": psutil.Process().memory_info().peak_wset / 2**30}
    import resource

    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"device": "cpu", "peak_gib": rss / 2**30}


def memory_in_use(device: str | None = None) -> float:
    """Memory held right now, in GiB: allocated CUDA tensors on a GPU, else the process's resident set. Read
    before training, it splits a peak into what was there already (weights, libraries) and what training added."""
    if memory_device(device) == "cuda":
        return torch.cuda.memory_allocated() / 2**30
    import psutil  # an accelerate dependency; reads the resident set on Linux, macOS and Windows alike

    return psutil.Process().memory_info().rss / 2**30
