"""What 07_model_merging's experiments share: scoring every model on both tasks, their table and sweep plot.

A merge of model A (extraction, text -> JSON) and model B (describing a JSON record in one sentence) is only
worth something next to what A and B score on their own task. So both scripts of 07 (merge.py: whole models
merged by mergekit; merge_adapters.py: LoRA adapters combined by PEFT) score every model, inputs and merges
alike, on the same first N eval examples of both tasks (`two_task_eval_sets`, `score_both_tasks`), and report
one row per model: `merge_table` (with the share of A's and B's own score each merge keeps) and, for a sweep
of a recipe's knob, `plot_sweep`. The merge arithmetic itself is `ftlab.merging`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ftlab.data import load_split
from ftlab.evaluation import evaluate_all
from ftlab.report import markdown_table


def two_task_eval_sets(eval_samples: int = 40) -> dict[str, list[dict]]:
    """The first `eval_samples` (0 = all) eval examples of each task, the same people: what 07_model_merging
    scores every model on, so that a merge's two scores sit next to A's and B's own."""
    n = eval_samples or None
    return {"extract": load_split("sft_eval")[:n], "describe": load_split("describe_eval")[:n]}


def score_both_tasks(label: str, model, tokenizer, eval_sets: dict[str, list[dict]], *, max_new_tokens: int = 80,
                     batch_size: int = 64) -> dict:
    """`evaluate_all` on `two_task_eval_sets`, in the number format of the device the model is on (a GPU's bf16
    or fp16 autocast; a CPU's bf16 where it multiplies it natively, else fp32: never the GPU's format for a
    model left on the CPU); prints one line; returns the scores and each set's first answer."""
    from ftlab.platforms import choose, detect

    choice = choose(detect(), use_cpu=model.device.type == "cpu")
    start = time.perf_counter()
    scores, answers = evaluate_all(model, tokenizer, eval_sets, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, bf16=choice.bf16, fp16=choice.fp16)
    print(f"{label:<28} " + "   ".join(f"{task} {scores[task]['exact_match']:6.1%}" for task in eval_sets)
          + f"   ({time.perf_counter() - start:.0f} s to score)")
    return {"scores": scores, "first_answers": {task: answers[task][0] for task in eval_sets}}


def merge_table(rows: list[dict], a_own: float | None, b_own: float | None) -> str:
    """A markdown table, one row per model: its exact-match score on each task and, when A's and B's own scores
    are known, the share of each a merge keeps (extract against A's, describe against B's)."""
    keeps = a_own is not None and b_own is not None

    def share(score: float, own: float) -> str:
        return f"{score / own:.0%}" if own else "-"

    header = ["model", "layers", "parameters", "merge s", "extract exact", "describe exact"]
    header += ["keeps of A (extract)", "keeps of B (describe)"] if keeps else []
    cells = []
    for r in rows:
        extract, describe = r["scores"]["extract"]["exact_match"], r["scores"]["describe"]["exact_match"]
        row = [r["model"], r["layers"], f"{r['parameters'] / 1e6:.1f}M", r.get("merge_seconds", "-"),
               f"{extract:.1%}", f"{describe:.1%}"]
        cells.append(row + ([share(extract, a_own), share(describe, b_own)] if keeps else []))
    return markdown_table(header, cells)


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
