"""What every script reports: scores before and after, time, memory, parameters, a loss curve, tables.

The same numbers in the same shape from every technique folder, so a learner can put two runs side
by side (`metrics.json`) and see what LoRA or 4-bit loading bought and what it cost. A lesson ends in

    summarize("02_sft", trainer, result, data, before, after)

which reads the rest (output folder, log history, parameters, time, tokens) from the trainer and the data.
Scripts that compare several models instead write `results.json` and `results.md` with `write_results`.
What the numbers measure (peak memory, parameter counts) is `ftlab.resources`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftlab.data import gold_of
from ftlab.metrics import format_scores
from ftlab.resources import TRAINED_ON, count_parameters, peak_memory, resumed
from ftlab.task import task_of


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


def summarize(technique: str, trainer, result, data, before, after, *, parameters: tuple[int, int] | None = None,
              tokens_seen: int | None = None, extra: dict | None = None) -> dict:
    """The end of a training lesson: print the before/after table and what the run cost; write metrics.json,
    predictions.jsonl and loss_curve.png to the trainer's output_dir.

    `result` is what `trainer.train()` returned (its `train_runtime` is the time); `data` the script's `TaskData`;
    `before`/`after` what `ftlab.evaluation.score_task` returned (`before` is None under --eval_before false).
    Parameters are counted on `trainer.model` unless given; tokens are the trainer's own count (`tokens_seen`,
    kept by SFT) unless given, and left out of a resumed run, whose time covers only its own steps."""
    facts = run_facts(result.metrics["train_runtime"], parameters or count_parameters(trainer.model),
                      trainer.state.log_history,
                      None if resumed() else tokens_seen or getattr(trainer, "tokens_seen", None))
    return write_summary(trainer.args.output_dir, technique, before, after, facts, data, trainer.state.log_history,
                         extra)


def write_summary(output_dir: str, technique: str, before, after, facts: dict, data, log_history: list[dict],
                  extra: dict | None = None) -> dict:
    """`summarize` for a run trained elsewhere (LLaMA-Factory's): `facts` as `run_facts` gives them."""
    first = next(iter(data.eval_sets.values()))[0]
    metrics = {"technique": technique, "task": task_of(first["messages"]), "before": before and before.scores,
               "after": after.scores, **facts, **(extra or {})}
    print(f"\n== {technique}: {metrics['task']} task scores (greedy) ==")
    print(format_scores(metrics["before"], metrics["after"]))
    save_metrics(output_dir, metrics, log_history)
    write_predictions(Path(output_dir) / "predictions.jsonl", data.eval_sets, data.questions,
                      {"before": before and before.answers, "after": after.answers})
    print(f"                {Path(output_dir) / 'predictions.jsonl'}")
    return metrics


# ---- Scripts that compare several models (07, 08, 09): results.json and a markdown table ---------------------
def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: one header row, a separator, then one row per list of cells (each cell str()-ed)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(output_dir, results: dict, table: str, also: str = "") -> None:
    """Write `results` to results.json and `table` (markdown) to results.md in `output_dir` (made if missing), and
    print where; `also` names other files the script wrote there, for the same line."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    print(f"wrote {out / 'results.json'}, results.md" + (f", {also}" if also else ""))
