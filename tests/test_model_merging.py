"""07_model_merging/merge.py on tiny models: every recipe runs, sweeps, stacking, and one-line errors."""

import json

import pytest
import torch
from conftest import ROOT, build_tiny_model, run_script

RECIPES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "07_model_merging" / "mergekit").glob("*.yaml"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 30-layer tiny base (SmolLM2's depth: passthrough's layer ranges fit) and two "finetunes" of it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("merge-inputs")
    base = build_tiny_model(folder / "base", layers=30)
    for seed in (1, 2):
        model = AutoModelForCausalLM.from_pretrained(base)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=generator))  # large enough to change greedy answers
        model.save_pretrained(folder / f"ft{seed}")
        AutoTokenizer.from_pretrained(base).save_pretrained(folder / f"ft{seed}")
    return ["--model_a", str(folder / "ft1"), "--model_b", str(folder / "ft2"), "--base_model", str(base)]


def merge(*args):
    return run_script("07_model_merging/merge.py", "--config", "07_model_merging/config.yaml", "--eval_samples", "3",
                      "--max_new_tokens", "6", *args)


def test_every_recipe_merges_scores_both_tasks_and_keeps_the_model(inputs, tmp_path):
    assert len(RECIPES) == 7
    done = merge("--recipes", *RECIPES, *inputs, "--score_inputs", "true", "--output_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("device: cpu, ") and "mergekit merges on the CPU" in done.stdout.splitlines()[0]
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert list(rows)[:3] == ["base", "A (extract)", "B (describe)"] and len(rows) == 10
    for row in rows.values():
        assert {"extract", "describe"} <= set(row["scores"]) and row["scores"]["describe"]["n"] == 3
        assert "valid_json" in row["scores"]["extract"] and "one_sentence" in row["scores"]["describe"]
    stacked = rows["passthrough"]
    assert stacked["layers"] == 40 and stacked["parameters"] > rows["A (extract)"]["parameters"]
    assert rows["ties density=0.5"]["merge_seconds"] >= 0
    for recipe in RECIPES:  # each merged model kept, loadable by from_pretrained
        assert (tmp_path / recipe.split("/")[-1].removesuffix(".yaml") / "model.safetensors").is_file()
    assert "| passthrough | 40 |" in (tmp_path / "results.md").read_text()


def test_a_sweep_of_t_starts_at_A_ends_at_B_draws_the_plot_and_deletes_the_weights(inputs, tmp_path):
    done = merge("--recipes", "07_model_merging/mergekit/linear.yaml", "07_model_merging/mergekit/slerp.yaml",
                 *inputs, "--sweep", "0,0.5,1", "--score_inputs", "true", "--output_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    a, b = rows["A (extract)"]["first_answers"], rows["B (describe)"]["first_answers"]
    assert a != b  # the two inputs answer differently, so the ends below are a real check
    for recipe in ("linear", "slerp"):
        assert rows[f"{recipe} t=0"]["first_answers"] == a and rows[f"{recipe} t=1"]["first_answers"] == b
        assert rows[f"{recipe} t=0.5"]["value"] == 0.5
    assert (tmp_path / "score_vs_knob.png").stat().st_size > 10_000
    assert not list(tmp_path.glob("*/model.safetensors"))  # a sweep keeps scores, not ~540 MB per point


def test_a_missing_model_names_the_command_that_trains_it(tmp_path):
    done = merge("--recipes", "07_model_merging/mergekit/linear.yaml", "--model_b", str(tmp_path / "nothing"),
                 "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 07_model_merging/mergekit/linear.yaml: model") and "not found" in last


def test_an_unknown_merge_method_is_one_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("merge_method: average\nmodels: []\n")
    done = merge("--recipes", str(recipe), "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 1 and "merge_method must be one of" in done.stderr.strip().splitlines()[-1]


# ---- merge_adapters.py: PEFT's add_weighted_adapter on two tiny LoRA adapters ------------------------------
@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    """Two rank-4 LoRA adapters of the tiny model with random (non-zero) A and B, so each changes the answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("adapters")
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.5)
        peft_model.save_pretrained(folder / f"lora{seed}")
        AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder / f"lora{seed}")
    return ["--adapter_a", str(folder / "lora1"), "--adapter_b", str(folder / "lora2"), "--base_model", str(tiny_model)]


def merge_adapters(*args):
    return run_script("07_model_merging/merge_adapters.py", "--config", "07_model_merging/adapters.yaml",
                      "--eval_samples", "3", "--max_new_tokens", "6", *args)


def test_every_combination_runs_and_cat_stacks_the_ranks(adapters, tmp_path):
    done = merge_adapters(*adapters, "--combinations", "cat", "svd", "linear", "ties", "dare_ties", "ties_svd",
                          "--save", "true", "--output_dir", str(tmp_path / "new"))  # a folder that does not exist yet
    tmp_path = tmp_path / "new"
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert list(rows)[:3] == ["base", "A (extract LoRA)", "B (describe LoRA)"] and len(rows) == 9
    assert rows["cat (r=8)"]["rank"] == 8 and rows["svd (r=4)"]["rank"] == 4 and "ties density=0.5 (r=4)" in rows
    assert rows["A (extract LoRA)"]["first_answers"] != rows["base"]["first_answers"]  # the adapters do something
    assert json.loads((tmp_path / "cat" / "adapter_config.json").read_text())["r"] == 8  # saved, rank 4 + 4


def test_with_weights_1_0_cat_and_svd_are_adapter_a(adapters, tmp_path):
    done = merge_adapters(*adapters, "--combinations", "cat", "svd", "--weights", "1.0", "0.0",
                          "--output_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("device: cpu, ")
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    a, b = rows["A (extract LoRA)"]["first_answers"], rows["B (describe LoRA)"]["first_answers"]
    assert a != b
    assert rows["cat (r=8)"]["first_answers"] == a and rows["svd (r=4)"]["first_answers"] == a


def test_bad_adapter_input_is_one_line(adapters, tmp_path):
    done = merge_adapters("--adapter_a", str(tmp_path), "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 1 and "no adapter_config.json" in done.stderr.strip().splitlines()[-1]
    done = merge_adapters(*adapters, "--combinations", "average", "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 1 and "PEFT knows" in done.stderr.strip().splitlines()[-1]


# ---- Where the scoring runs, and in which number format -----------------------------------------------------
@pytest.mark.parametrize("model_on, card, cpu_bf16, expected", [
    ("cpu", (8, 0), False, (False, False)),  # a model left on the CPU gets the CPU's format, not the A100's bf16
    ("cpu", (8, 0), True, (True, False)),    # (on a CPU with native bf16: its bf16 copy)
    ("cuda", (8, 0), False, (True, False)),  # on an A100: bf16 autocast
    ("cuda", (7, 5), True, (False, True)),   # on a T4: fp16 autocast, never bf16
])
def test_score_both_tasks_scores_in_the_format_of_the_device_the_model_is_on(model_on, card, cpu_bf16, expected,
                                                                             monkeypatch):
    from types import SimpleNamespace

    import ftlab.merge_experiments
    import ftlab.platforms

    seen = {}

    def evaluate_all(model, tokenizer, eval_sets, **kwargs):
        seen.update(kwargs)
        return ({t: {"exact_match": 0.0} for t in eval_sets}, {t: ["-"] for t in eval_sets})

    monkeypatch.setattr(ftlab.platforms, "detect", lambda: ftlab.platforms.Hardware(
        cuda=True, cuda_capability=card, cuda_name="GPU", cuda_count=1, cpu_bf16=cpu_bf16))
    monkeypatch.setattr(ftlab.merge_experiments, "evaluate_all", evaluate_all)
    model = SimpleNamespace(device=torch.device(model_on))
    ftlab.merge_experiments.score_both_tasks("m", model, None, {"extract": [], "describe": []})
    assert (seen["bf16"], seen["fp16"]) == expected


@pytest.mark.gpu
def test_merges_are_scored_on_the_gpu(inputs, tmp_path):
    done = merge("--recipes", "07_model_merging/mergekit/ties.yaml", *inputs, "--output_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("device: cuda, ")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows[0]["scores"]["extract"]["n"] == 3


@pytest.mark.gpu
def test_adapters_are_combined_and_scored_on_the_gpu(adapters, tmp_path):
    done = merge_adapters(*adapters, "--combinations", "cat", "svd", "--weights", "1.0", "0.0",
                          "--output_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("device: cuda, ")
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert rows["cat (r=8)"]["rank"] == 8 and rows["svd (r=4)"]["scores"]["describe"]["n"] == 3
