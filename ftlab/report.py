"""What every script reports after training: parameters, memory, time, scores, a loss curve.

The same numbers in the same shape from every technique folder, so a learner can put two runs side
by side (`metrics.json`) and see what LoRA or 4-bit loading bought and what it cost.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from ftlab.data import gold_of
from ftlab.metrics import format_scores
from ftlab.task import task_of


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts. For 4-bit weights each stored element holds two values; under
    DeepSpeed ZeRO-3 a process holds only a shard of each weight, and `ds_numel` is the whole weight's size."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel()) * (2 if p.dtype == torch.uint8 and hasattr(p, "quant_state") else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


# What `timed_train` saw of the run it timed: the device it trained on, and where its trainable parameters were at
# each optimizer step (a run can say "cuda" in its arguments and still hold its weights on the CPU).
TRAINED_ON: dict = {}


class RecordParameterDevices(TrainerCallback):
    """Notes the trainable parameters' devices at every optimizer step, into TRAINED_ON["parameters"]."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            seen = {p.device.type for p in model.parameters() if p.requires_grad}
            TRAINED_ON["parameters"] = sorted(set(TRAINED_ON.get("parameters", [])) | seen)


def timed_train(trainer, resume: bool = False) -> float:
    """`trainer.train()` (from the last checkpoint in output_dir if `resume`); its wall time in seconds, with
    the peak-memory counter of the training device reset first so `peak_memory` reports training onwards, not
    loading or scoring, and the trainable parameters' devices recorded at each step (`TRAINED_ON`)."""
    import time

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
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    return time.perf_counter() - start


def folder_megabytes(folder: Path, pattern: str = "*") -> float:
    """Size on disk of the files in `folder` matching `pattern`, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(folder).glob(pattern) if f.is_file()) / 1e6


# Linux keeps a process's peak resident set as VmHWM in /proc/self/status, and resets it to the current size
# when "5" is written to /proc/self/clear_refs: the CPU's counterpart of torch.cuda.reset_peak_memory_stats.
PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def memory_device(device: str | None = None) -> str:
    """Whose memory to read: `device` ("cuda", "mps", "cpu"), else the device the last timed run trained on, else
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
    """Peak memory since the last reset (see `timed_train`), in GiB: GPU tensors allocated on CUDA, Metal's
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


def save_curves(log_history: list[dict], path: Path, panels: dict[str, dict[str, str]]) -> bool:
    """Plot logged values against step from `trainer.state.log_history`, one panel per entry of `panels`
    ({y-axis label: {logged key: legend label}}); a key never logged is left out. False if nothing was."""
    drawn = {title: {label: [(h["step"], h[key]) for h in log_history if key in h] for key, label in lines.items()}
             for title, lines in panels.items()}
    drawn = {title: {label: points for label, points in lines.items() if points} for title, lines in drawn.items()}
    drawn = {title: lines for title, lines in drawn.items() if lines}
    if not drawn:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(drawn), figsize=(6 * len(drawn), 3.5), squeeze=False)
    for ax, (title, lines) in zip(axes[0], drawn.items(), strict=True):
        for label, points in lines.items():
            ax.plot(*zip(*points), marker=".", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def save_loss_curve(log_history: list[dict], path: Path) -> bool:
    """Plot training (and eval) loss against step; False if nothing logged."""
    return save_curves(log_history, path, {"loss": {"loss": "train loss", "eval_loss": "eval loss"}})


def write_predictions(path: Path, eval_sets: dict[str, list[dict]], questions: list[dict] | None,
                      answers: dict[str, dict | None]) -> None:
    """One line per eval example (and probe question): its set, text, gold and each model's answer (the gold of
    a describe example is the reference sentence; any sentence stating the same facts scores as well)."""

    def gold(ex):
        return gold_of(ex) if task_of(ex["messages"]) == "extract" else ex["messages"][-1]["content"]

    with open(path, "w", encoding="utf-8") as f:
        rows = [(name, i, ex["messages"][1]["content"], gold(ex))
                for name, examples in eval_sets.items() for i, ex in enumerate(examples)]
        rows += [("probe", i, q["question"], q["answers"]) for i, q in enumerate(questions or [])]
        for name, i, text, gold in rows:
            row = {"set": name, "text": text, "gold": gold}
            row.update({label: got[name][i] for label, got in answers.items() if got is not None and name in got})
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_facts(train_seconds: float, parameters: tuple[int, int], log_history: list[dict],
              tokens_seen: int | None = None) -> dict:
    """What a training run cost, in the keys every metrics.json shares: time, tokens/s, peak memory, parameters."""
    trainable, total = parameters
    memory = peak_memory()
    tokens_per_second = tokens_seen / train_seconds if tokens_seen and train_seconds > 0 else None
    return {
        "train_seconds": round(train_seconds, 1),
        "train_tokens": tokens_seen,
        "train_tokens_per_second": round(tokens_per_second, 1) if tokens_per_second else None,
        # 6 x parameters x tokens/s: the model FLOPs a second of training did (2 forward, 4 backward per weight).
        "model_gflops_per_second": round(6 * total * tokens_per_second / 1e9, 1) if tokens_per_second else None,
        "peak_memory_gib": round(memory["peak_gib"], 2),
        "memory_device": memory["device"],
        # where the trainable parameters were at the optimizer steps (None for a run timed elsewhere)
        "parameters_trained_on": ",".join(TRAINED_ON.get("parameters", [])) or None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_percent": round(100 * trainable / total, 3),
        "train_losses": [h["loss"] for h in log_history if "loss" in h],
    }


def save_metrics(output_dir: str, metrics: dict, log_history: list[dict]) -> bool:
    """Write metrics.json and loss_curve.png to `output_dir`, and print the run's cost; True if a curve was drawn."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plotted = save_loss_curve(log_history, out / "loss_curve.png")
    speed = metrics.get("train_tokens_per_second")
    print(f"train time      {metrics['train_seconds']:8.1f} s"
          + (f"  ({speed:,.0f} tokens/s, {metrics['model_gflops_per_second']} GFLOP/s of model work)" if speed else ""))
    if metrics.get("peak_memory_gib") is not None:  # None where another process trained (LLaMA-Factory's runs)
        print(f"peak memory     {metrics['peak_memory_gib']:8.2f} GiB ({metrics['memory_device']})")
    if metrics.get("trainable_parameters") is not None:
        print(f"trainable       {metrics['trainable_parameters']:,} of {metrics['total_parameters']:,} parameters "
              f"({metrics['trainable_percent']}%)")
    print(f"wrote           {out / 'metrics.json'}" + (f", {out / 'loss_curve.png'}" if plotted else ""))
    return plotted


def summarize(output_dir: str, technique: str, before: dict | None, after: dict, *, train_seconds: float,
              parameters: tuple[int, int], log_history: list[dict], eval_sets: dict[str, list[dict]],
              questions: list[dict] | None, answers: dict[str, dict | None], tokens_seen: int | None = None,
              extra: dict | None = None) -> dict:
    """Print the before/after table and resource use; write metrics.json, predictions.jsonl, loss_curve.png.

    `before`/`after` map each eval set's name (and "probe") to its scores, as `evaluation.evaluate_all` returns."""
    first = next(iter(eval_sets.values()))[0]
    metrics = {"technique": technique, "task": task_of(first["messages"]), "before": before, "after": after,
               **run_facts(train_seconds, parameters, log_history, tokens_seen), **(extra or {})}
    print(f"\n== {technique}: {metrics['task']} task scores (greedy) ==")
    print(format_scores(before, after))
    save_metrics(output_dir, metrics, log_history)
    write_predictions(Path(output_dir) / "predictions.jsonl", eval_sets, questions, answers)
    print(f"                {Path(output_dir) / 'predictions.jsonl'}")
    return metrics


# ---- Merges (07_model_merging): each model scored on both tasks -------------------------------------------
def merge_table(rows: list[dict], a_own: float | None, b_own: float | None) -> str:
    """A markdown table, one row per model: its exact-match score on each task and, when A's and B's own scores
    are known, the share of each a merge keeps (extract against A's, describe against B's)."""
    keeps = a_own is not None and b_own is not None

    def share(score: float, own: float) -> str:
        return f"{score / own:.0%}" if own else "-"

    head = "| model | layers | parameters | merge s | extract exact | describe exact |"
    head += " keeps of A (extract) | keeps of B (describe) |" if keeps else ""
    lines = [head, "|" + "---|" * head.count(" |")]
    for r in rows:
        extract, describe = r["scores"]["extract"]["exact_match"], r["scores"]["describe"]["exact_match"]
        line = (f"| {r['model']} | {r['layers']} | {r['parameters'] / 1e6:.1f}M | {r.get('merge_seconds', '-')} |"
                f" {extract:.1%} | {describe:.1%} |")
        if keeps:
            line += f" {share(extract, a_own)} | {share(describe, b_own)} |"
        lines.append(line)
    return "\n".join(lines)


def plot_sweep(rows: list[dict], path: Path, a_own: float | None = None, b_own: float | None = None) -> bool:
    """Exact match on both tasks against each recipe's knob (one panel per knob: t, density, lambda), with A's
    and B's own scores as dotted lines; False if no row has a knob."""
    swept = [r for r in rows if r.get("knob") and r.get("value") is not None]
    if not swept:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = sorted({r["knob"] for r in swept})
    fig, axes = plt.subplots(1, len(knobs), figsize=(6.5 * len(knobs), 4), squeeze=False)
    for ax, knob in zip(axes[0], knobs, strict=True):
        recipes = list(dict.fromkeys(r["recipe"] for r in swept if r["knob"] == knob))
        for i, recipe in enumerate(recipes):  # markers differ too: two recipes can give the same scores
            points = sorted(((r["value"], r["scores"]) for r in swept if r["recipe"] == recipe), key=lambda p: p[0])
            xs = [x for x, _ in points]
            for task, style in (("extract", "-"), ("describe", "--")):
                ax.plot(xs, [100 * s[task]["exact_match"] for _, s in points], style, marker="osx^vD"[i % 6],
                        markersize=9 - 3 * (i % 2), color=f"C{i}", label=f"{recipe}: {task}")
        for own, label in ((a_own, "A on extract"), (b_own, "B on describe")):
            if own is not None:
                ax.axhline(100 * own, color="gray", linestyle=":", linewidth=1)
                ax.text(ax.get_xlim()[0], 100 * own, f" {label}", color="gray", va="bottom", fontsize=8)
        ax.set_xlabel(knob + (" (0 = A, 1 = B)" if knob == "t" else ""))
        ax.set_ylabel("exact match, %")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
