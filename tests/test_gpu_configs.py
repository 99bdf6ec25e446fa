"""The GPU track's configs (one per training lesson, beside its CPU config) on the CPU: what each sets, and that its
memory estimate fits a 16 GB T4. Each also parses through its own script and trains 2 steps on a tiny model of its
model's family in tests/test_gpu_check.py, through `make gpu-check`'s CPU smoke run (one run serves both).

The hub models they name cannot be downloaded here, so the memory is estimated from each model's published
config.json shape (`ftlab.memory.PUBLISHED`, checked against the model cards' parameter counts). The other chat
templates those models carry (Qwen2.5's ChatML with a default system prompt, Llama 3's headers) are checked to
keep the answer-only loss on the answer and the prompt the same in training and in scoring.
"""

import json
import math
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT, run_script

from ftlab.memory import CARDS, HEADROOM, PUBLISHED, count_text, fit_report, published_config, training_budget

# lesson -> (script, its GPU config, its CPU config)
GPU_CONFIGS = {
    "01": ("01_full_finetuning/train.py", "01_full_finetuning/gpu.yaml", "01_full_finetuning/config.yaml"),
    "02": ("02_sft/train.py", "02_sft/gpu.yaml", "02_sft/config.yaml"),
    "03": ("03_rlhf/train_dpo.py", "03_rlhf/dpo_gpu.yaml", "03_rlhf/dpo.yaml"),
    "04": ("04_moe/train.py", "04_moe/gpu.yaml", "04_moe/config.yaml"),
    "05": ("05_peft_lora/train.py", "05_peft_lora/gpu.yaml", "05_peft_lora/config.yaml"),
    "06": ("06_qlora/train.py", "06_qlora/gpu.yaml", "06_qlora/config.yaml"),
    "08": ("08_quantization/train_qat.py", "08_quantization/train_qat_gpu.yaml", "08_quantization/train_qat.yaml"),
}
# The test size: 2 steps, 2 synthetic examples scored with 8 new tokens, nothing else scored or saved on the way.
QUICK = ["--max_steps", "2", "--eval_samples", "2", "--max_new_tokens", "8", "--handwritten_file", "none",
         "--probe_file", "none", "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1"]
T4 = CARDS["16 GB (T4)"]


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


# ---- The configs: what they set, and the memory they need -----------------------------------------------------
@pytest.mark.parametrize("lesson", GPU_CONFIGS)
def test_a_gpu_config_keeps_every_knob_of_the_cpu_one_and_leaves_the_format_to_the_card(lesson):
    _, gpu, cpu = GPU_CONFIGS[lesson]
    config = load(gpu)
    assert set(load(cpu)) <= set(config), f"{gpu} lacks {sorted(set(load(cpu)) - set(config))}"
    assert not {"bf16", "fp16", "use_cpu"} & set(config)  # ftlab/platforms.py decides from the card
    assert config["output_dir"].endswith("_gpu") and config["output_dir"] != load(cpu)["output_dir"]
    start = config["model_name_or_path"]
    assert start in PUBLISHED or start == load(GPU_CONFIGS["02"][1])["output_dir"]  # 08 starts from 02's GPU run


@pytest.mark.parametrize("name, total, non_embedding", [
    ("Qwen/Qwen2.5-0.5B-Instruct", "494M", "358M"), ("Qwen/Qwen2.5-1.5B-Instruct", "1.54B", "1.31B"),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", "362M", None), ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "1.71B", None)])
def test_the_published_shapes_count_what_the_model_cards_say(name, total, non_embedding):
    """The shapes the budgets below are computed from give the model cards' parameter counts (Qwen's cards also
    give the count without the embedding: 0.36B and 1.31B), counted on the real class built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftlab.memory import describe

    config = published_config(name)
    params = describe(config).params
    with torch.device("meta"):  # allocates nothing
        assert sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters()) == params
    assert count_text(params) == total
    if non_embedding:
        assert count_text(params - config.vocab_size * config.hidden_size) == non_embedding


def test_a_published_model_is_counted_where_the_hub_cannot_be_reached(monkeypatch):
    """`python -m ftlab.memory Qwen/Qwen2.5-1.5B-Instruct` under HF_HUB_OFFLINE=1 (as make runs): the published
    shape; a model this module does not carry still says it cannot be found."""
    from ftlab.memory import describe
    from ftlab.models import ModelNotFound

    def unreachable(ref):
        raise ModelNotFound(f"model {ref!r}: the hub is unreachable")

    monkeypatch.setattr("ftlab.models.resolve_model", unreachable)
    assert describe("Qwen/Qwen2.5-1.5B-Instruct").params == 1_543_714_304
    with pytest.raises(ModelNotFound):
        describe("someone/not-published-here")


def budget_settings(lesson: str) -> tuple[object, dict]:
    """(the model's config, `ftlab.memory.fit_report`'s settings) for a lesson's GPU config, read from the YAML as
    its script would run it: fp32 weights under autocast are "mixed", 16-bit weights "bf16" (fp16 on a T4: the
    same bytes), DPO's rows are 2 per pair plus a reference copy, an upcycled MoE counts top_k experts' activations."""
    from ftlab.memory import optimizer_of

    config = load(GPU_CONFIGS[lesson][1])
    name = config["model_name_or_path"]
    model = published_config(name if name in PUBLISHED else load(GPU_CONFIGS["02"][1])["model_name_or_path"])
    settings = {"precision": "mixed" if config["dtype"] == "float32" else "bf16",
                "batch": config["per_device_train_batch_size"], "seq": config.get("max_length") or config["block_size"],
                "gradient_checkpointing": config["gradient_checkpointing"],
                "optimizer": optimizer_of(config.get("gpu_optim") or config.get("optim", "adamw_torch")),
                "method": "qlora" if config.get("load_in_4bit") else "lora" if config.get("use_peft") else "full"}
    if settings["method"] != "full":
        settings["lora_r"] = config["lora_r"]
    if lesson == "03":
        settings.update(batch=2 * settings["batch"], reference=not config["use_peft"])
    if lesson == "04":
        from transformers import MixtralConfig

        dense = model
        model = MixtralConfig(**{key: getattr(dense, key) for key in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "tie_word_embeddings")}, num_local_experts=config["num_experts"],
            num_experts_per_tok=config["top_k"])
        settings["intermediate"] = config["top_k"] * dense.intermediate_size  # the MLP width a token runs through
    return model, settings


@pytest.mark.parametrize("lesson", GPU_CONFIGS)
def test_a_gpu_config_fits_a_t4_with_a_fifth_to_spare(lesson):
    """ftlab.memory's estimate for the config as written, at max_length for every row (rows are padded only to the
    longest in a batch, ours ~200 tokens), is at most 80% of a T4's 15,360 MiB: the fifth left is for CUDA's own
    context (~0.3-0.5 GB), the allocator's slack and what the estimate leaves out. Measured peaks: not yet."""
    model, settings = budget_settings(lesson)
    budget = training_budget(model, **settings)
    report = fit_report(model, **settings)
    print(f"{lesson}: {report}")
    assert budget.total <= HEADROOM * T4, report
    assert "16 GB (T4): yes" in report and "24 GB: yes" in report


def test_fit_report_names_the_card_at_hand_and_says_no_when_it_does_not_fit():
    config = published_config("Qwen/Qwen2.5-1.5B-Instruct")
    report = fit_report(config, method="full", batch=8, device_memory=80e9, device_name="NVIDIA H100")
    first, second = report.splitlines()
    assert first.startswith("memory estimate (ftlab.memory): ") and "full, mixed, adamw, batch 8 x 384" in first
    assert "16 GB (T4): no" in second and "24 GB: no" in second and "NVIDIA H100 (80.0 GB): yes" in second
    lora = fit_report(config, method="lora", precision="bf16", batch=8, gradient_checkpointing=True)
    assert "16 GB (T4): yes" in lora  # what LoRA buys: the model full finetuning cannot train on a T4


# ---- 02 on a Llama-3-style template (the other templates: below; every GPU config trains in test_gpu_check) --
@pytest.fixture(scope="module")
def short_data(tmp_path_factory) -> dict:
    """The first lines of the training file, enough for 2 steps: tokenizing all of it would cost the run seconds
    that test nothing here."""
    folder = tmp_path_factory.mktemp("short-data")
    head = (ROOT / "data" / "sft_train.jsonl").read_text(encoding="utf-8").splitlines()[:32]
    (folder / "sft_train.jsonl").write_text("\n".join(head) + "\n", encoding="utf-8")
    return {"sft": str(folder / "sft_train.jsonl")}


def test_sft_trains_and_scores_with_a_llama3_template(tiny_llama3, short_data, tmp_path):
    """02's GPU config on a model whose template is Llama 3's (headers, <|eot_id|>, a BOS, no pad token); the
    Qwen2.5-style one is the 02 case above."""
    out = tmp_path / "run"
    result = run_script(GPU_CONFIGS["02"][0], "--config", GPU_CONFIGS["02"][1], "--model_name_or_path",
                        str(tiny_llama3), "--output_dir", str(out), *QUICK, "--train_file", short_data["sft"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert len(metrics["train_losses"]) == 2 and all(math.isfinite(x) for x in metrics["train_losses"])
    assert metrics["before"]["synthetic"]["n"] == metrics["after"]["synthetic"]["n"] == 2


# ---- Other chat templates: the answer-only loss falls on the answer, and training sees the scoring's prompt ------
# What each template writes after the answer (the end-of-turn token, and ChatML's newline after it), and the
# assistant header the prompt must end with.
TEMPLATES = {
    "tiny_qwen2": ("<|im_end|>\n", "<|im_start|>assistant\n"),
    "tiny_llama3": ("<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "tiny_model": ("<|im_end|>\n", "<|im_start|>assistant\n"),  # the suite's own ChatML, for comparison
}


@pytest.mark.parametrize("fixture", TEMPLATES)
def test_the_completion_is_the_answer_and_its_end_of_turn(fixture, request, tmp_path):
    """ftlab.data's prompt/completion split, tokenized by TRL's SFTTrainer as the scripts build it: the tokens that
    carry loss decode to exactly the JSON answer and the end of the turn; the prompt (system prompt ours, not a
    template's default) ends with the assistant header, and its tokens are the ones scoring generates from."""
    import torch
    from trl import SFTConfig

    from ftlab.data import TaskData, load_split
    from ftlab.models import load_causal_lm
    from ftlab.task import SYSTEM_PROMPT
    from ftlab.trl_cpu import SFTTrainer

    end, header = TEMPLATES[fixture]
    path = request.getfixturevalue(fixture)
    model, tokenizer = load_causal_lm(SimpleNamespace(model_name_or_path=str(path), dtype="float32",
                                                      attn_implementation=None))
    rows = load_split("sft_train")[:2]
    train, _ = TaskData(rows, {"synthetic": rows}, []).sft_datasets()
    args = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, max_length=384, report_to="none",
                     bf16=False, per_device_train_batch_size=2)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, row in enumerate(rows):  # TRL turns the completion mask into labels: -100 where no loss is taken
        ids, labels = trainer.train_dataset[i]["input_ids"], trainer.train_dataset[i]["labels"]
        prompt_length = sum(label == -100 for label in labels)
        prompt_ids, answer_ids = ids[:prompt_length], ids[prompt_length:]
        assert labels == [-100] * prompt_length + answer_ids  # the prompt, then the answer: one split point
        assert tokenizer.decode(answer_ids) == row["messages"][2]["content"] + end
        prompt = tokenizer.decode(prompt_ids)
        assert prompt.endswith(header) and SYSTEM_PROMPT in prompt and "You are Qwen" not in prompt
        scored = tokenizer.apply_chat_template(row["messages"][:2], tokenize=False, add_generation_prompt=True)
        assert prompt_ids == tokenizer(scored, add_special_tokens=False)["input_ids"]  # as ftlab.evaluation does
        labels = batch["labels"][i]
        assert labels[labels != -100].tolist() == answer_ids  # TRL's collator: loss on those tokens only
        assert torch.equal(batch["input_ids"][i][: len(ids)], torch.tensor(ids))
