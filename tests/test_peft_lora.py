"""05_peft_lora/train.py end to end on the tiny model: losses, what trains, both ways of serving, the variants."""

import json
import math

import pytest
import torch
from conftest import interrupted_at_step_2, run_script
from safetensors.torch import load_file

from ftlab.platforms import installed

SCRIPT = "05_peft_lora/train.py"
# Recorded on the CPU with OMP_NUM_THREADS=1: 4 steps, lr 1e-2, r 4, alpha 8, all linear layers, fp32 base.
EXPECTED_LOSSES = [6.2376, 6.2516, 6.2272, 6.2133]


def train(model, out, *extra):
    args = ["--config", "05_peft_lora/config.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--dtype", "float32", "--bf16", "false", "--max_steps", "4", "--learning_rate", "1e-2", "--lora_r", "4",
            "--lora_alpha", "8", "--logging_steps", "1", "--eval_steps", "2", "--save_steps", "2",
            "--save_total_limit", "2", "--eval_samples", "4", "--max_new_tokens", "8", *extra]
    result = run_script(SCRIPT, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    return out, train(tiny_model, out)


def logits_of(model, tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer(["Maria Rossi, 34, lives in Turin.", "Contact: ana@example.com"], return_tensors="pt",
                    padding=True)
    with torch.no_grad():
        return model.eval()(**ids).logits


def base_plus_adapter(tiny_model, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)


def test_losses_are_finite_and_match_the_recorded_run(run):
    _, metrics = run
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)


def test_only_the_adapter_trains(run, tiny_model):
    out, metrics = run
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_A" in name or "lora_B" in name for name in adapter)
    assert metrics["trainable_parameters"] == sum(t.numel() for t in adapter.values())
    assert metrics["total_parameters"] == metrics["trainable_parameters"] + sum(
        t.numel() for t in load_file(tiny_model / "model.safetensors").values())
    # Every adapter tensor moved between the step-2 checkpoint and the end (B starts at zero, A is random).
    earlier = load_file(out / "checkpoint-2" / "adapter_model.safetensors")
    assert [name for name in adapter if torch.equal(adapter[name], earlier[name])] == []
    # Frozen weights: in the merged model, everything LoRA does not target (embeddings, norms) is the base's.
    base, merged = load_file(tiny_model / "model.safetensors"), load_file(out / "merged" / "model.safetensors")
    untouched = [n for n in base if not n.endswith(("proj.weight",))]
    assert untouched and all(torch.equal(base[n], merged[n]) for n in untouched)
    assert all(not torch.equal(base[n], merged[n]) for n in base if n.endswith("proj.weight"))


def test_merged_model_equals_base_plus_adapter(run, tiny_model):
    """Both ways of serving: the adapter loaded onto a fresh base, and the merged model, give the same logits."""
    from transformers import AutoModelForCausalLM

    out, _ = run
    with_adapter = logits_of(base_plus_adapter(tiny_model, out), tiny_model)
    merged = logits_of(AutoModelForCausalLM.from_pretrained(out / "merged"), tiny_model)
    base = logits_of(AutoModelForCausalLM.from_pretrained(tiny_model), tiny_model)
    assert torch.allclose(with_adapter, merged, atol=1e-5)
    assert not torch.allclose(with_adapter, base, atol=1e-3)  # and the adapter does change the model


def test_outputs_are_written(run):
    out, metrics = run
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.json",
                 "loss_curve.png", "predictions.jsonl", "merged/model.safetensors", "merged/tokenizer.json"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "model.safetensors").exists()  # the adapter alone, not a copy of the base
    assert metrics["adapter_mb"] == pytest.approx((out / "adapter_model.safetensors").stat().st_size / 1e6, abs=0.01)
    assert metrics["peft_method"] == "lora" and metrics["lora_r"] == 4
    assert metrics["before"]["synthetic"]["n"] == metrics["after"]["synthetic"]["n"] == 4


def test_resume_continues_from_the_checkpoint(run, tiny_model, tmp_path):
    out, metrics = run
    resumed = interrupted_at_step_2(out, tmp_path)
    again = train(tiny_model, resumed, "--resume", "true", "--eval_before", "false")
    assert again["train_losses"] == pytest.approx(metrics["train_losses"], abs=1e-5)


@pytest.mark.parametrize("switch", [("--use_dora", "true"), ("--use_rslora", "true"),
                                    ("--lora_target_modules", "q_proj", "v_proj")])
def test_lora_variants_train(tiny_model, tmp_path, switch):
    metrics = train(tiny_model, tmp_path / "v", *switch, "--eval_before", "false", "--save_strategy", "no")
    assert len(metrics["train_losses"]) == 4 and all(math.isfinite(x) for x in metrics["train_losses"])


def test_pissa_adapter_is_converted_for_the_untouched_base(tiny_model, tmp_path):
    """PiSSA changes the base weights at the start; the saved adapter is converted so that a fresh, unchanged
    base plus the adapter still equals the trained model (= the merged one)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pissa"
    train(tiny_model, out, "--init_lora_weights", "pissa", "--eval_before", "false", "--save_strategy", "no")
    with_adapter = logits_of(base_plus_adapter(tiny_model, out), tiny_model)
    merged = logits_of(AutoModelForCausalLM.from_pretrained(out / "merged"), tiny_model)
    assert torch.allclose(with_adapter, merged, atol=1e-4)


def test_ia3_learns_scales_on_keys_values_and_down_projection_and_merges(tiny_model, tmp_path):
    """IA3: one learned vector per targeted layer (k_proj's and v_proj's outputs, down_proj's input), nothing else
    trains; the merged model (each weight scaled) answers as the base plus the adapter does."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path / "ia3"
    metrics = train(tiny_model, out, "--peft_method", "ia3", "--eval_before", "false", "--save_strategy", "no")
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("ia3_l" in name for name in adapter)
    assert {name.split(".")[-2] for name in adapter} == {"k_proj", "v_proj", "down_proj"}
    config = AutoConfig.from_pretrained(tiny_model)
    kv_width = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    assert metrics["trainable_parameters"] == config.num_hidden_layers * (2 * kv_width + config.intermediate_size)
    assert any(not torch.equal(t, torch.ones_like(t)) for t in adapter.values())  # trained away from the start (1)
    merged = logits_of(AutoModelForCausalLM.from_pretrained(out / "merged"), tiny_model)
    assert torch.allclose(logits_of(base_plus_adapter(tiny_model, out), tiny_model), merged, atol=1e-4)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "p_tuning"])
def test_soft_prompts_train_and_score(tiny_model, tmp_path, method):
    metrics = train(tiny_model, tmp_path / method, "--peft_method", method, "--num_virtual_tokens", "8",
                    "--save_strategy", "no", "--handwritten_file", "none", "--probe_file", "none")
    assert all(math.isfinite(x) for x in metrics["train_losses"])
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"] / 10
    assert metrics["after"]["synthetic"]["n"] == 4 and not (tmp_path / method / "merged").exists()


def test_full_finetuning_is_refused_with_one_line(tiny_model, tmp_path):
    result = run_script(SCRIPT, "--config", "05_peft_lora/config.yaml", "--use_peft", "false",
                        "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: 05_peft_lora trains")


@pytest.mark.skipif(not installed("unsloth"), reason="Unsloth installs on Linux only (it needs Triton)")
def test_unsloth_variant_trains_on_the_cpu(tiny_model, tmp_path):
    """train_unsloth.py with the same config: on a machine without a GPU, Unsloth's CPU fallback trains LoRA."""
    out = tmp_path / "unsloth"
    result = run_script("05_peft_lora/train_unsloth.py", "--config", "05_peft_lora/config.yaml",
                        "--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--dtype", "float32",
                        "--bf16", "false", "--max_steps", "4", "--learning_rate", "1e-2", "--lora_r", "4",
                        "--lora_alpha", "8", "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy",
                        "no", "--eval_samples", "4", "--max_new_tokens", "8", "--handwritten_file", "none",
                        "--probe_file", "none")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no GPU found, training on CPU" in result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert len(metrics["train_losses"]) == 4 and all(math.isfinite(x) for x in metrics["train_losses"])
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert load_file(out / "adapter_model.safetensors") and (out / "merged").is_dir()


def test_unsloth_refuses_what_only_train_py_has(tiny_model, tmp_path):
    if not installed("unsloth"):
        pytest.skip("Unsloth installs on Linux only (it needs Triton)")
    result = run_script("05_peft_lora/train_unsloth.py", "--config", "05_peft_lora/config.yaml",
                        "--output_dir", str(tmp_path / "o"), "--use_dora", "true")
    assert result.returncode == 1 and "train_unsloth.py trains plain LoRA" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_real_model_learns_the_task_as_well_as_full_finetuning(tmp_path):
    """The folder's default config on the embedded SmolLM2 must hold the issue's bar: exact match within 5 points
    of 02_sft's full finetuning (60.0% synthetic, 57.5% hand-written) at <= 5% of the parameters trained.
    Measured: 65.0% and 58.8% (README); eval-loss passes and checkpoints are off, they change no weight."""
    result = run_script(SCRIPT, "--config", "05_peft_lora/config.yaml", "--output_dir", str(tmp_path / "real"),
                        "--eval_strategy", "no", "--save_strategy", "no", timeout=1500, threads=None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "real" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["trainable_parameters"] <= 0.05 * metrics["total_parameters"]
    assert metrics["after"]["synthetic"]["exact_match"] >= 0.55, metrics["after"]["synthetic"]
    assert metrics["after"]["handwritten"]["exact_match"] >= 0.525, metrics["after"]["handwritten"]
