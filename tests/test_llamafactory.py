"""configs/llamafactory: every YAML trains a few steps on the tiny model in LLaMA-Factory's own environment, and
score.py (in the main environment) reads what it wrote. Skipped where .venv-llamafactory is absent."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, aborted_after_finishing, one_at_a_time, run_script

LF_BIN = ROOT / ".venv-llamafactory" / "bin"
CONFIGS = ROOT / "configs" / "llamafactory"
needs_lf = pytest.mark.skipif(
    not (LF_BIN / "llamafactory-cli").exists(),
    reason="needs LLaMA-Factory's own environment: run `make setup-llamafactory` (its pins clash with TRL 1.x)")


def train(yaml: str, model: Path, out: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`llamafactory-cli train configs/llamafactory/<yaml> key=value...` as a learner runs it (3 steps, on a CPU)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": f"{LF_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    command = [str(LF_BIN / "llamafactory-cli"), "train", str(CONFIGS / yaml), f"model_name_or_path={model}",
               f"output_dir={out}", "max_steps=3", "save_steps=2", "use_cpu=true", *overrides]
    done = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True, timeout=600, check=False)
    assert done.returncode == 0 or aborted_after_finishing(done, out / "train_results.json"), \
        done.stdout[-3000:] + done.stderr[-3000:]
    return done


def losses(out: Path) -> list[float]:
    """The training losses LLaMA-Factory logged (trainer_log.jsonl, every logging_steps)."""
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def score(out: Path, *flags: str) -> dict:
    done = run_script("configs/llamafactory/score.py", str(out), "--eval_samples", "4", "--handwritten_file", "none",
                      "--probe_file", "none", *flags)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@needs_lf
@pytest.mark.parametrize("yaml, weights", [
    ("sft_lora.yaml", "adapter_model.safetensors"),
    ("sft_full.yaml", "model.safetensors"),
    ("dpo_lora.yaml", "adapter_model.safetensors"),
])
def test_yaml_trains_and_scores(yaml, weights, tiny_model, tmp_path):
    out = tmp_path / "run"
    train(yaml, tiny_model, out)
    assert (out / weights).is_file() and (out / "checkpoint-3").is_dir()  # resumable: LLaMA-Factory picks it up
    logged = losses(out)
    assert logged and all(math.isfinite(x) for x in logged)
    metrics = score(out, *(["--eval_before", "true"] if "lora" in yaml else []))
    assert metrics["after"]["synthetic"]["n"] == 4 and metrics["trained_by"] == "LLaMA-Factory"
    assert metrics["train_losses"] == logged  # score.py read LLaMA-Factory's own log
    assert (metrics["before"] is not None) == ("lora" in yaml)  # an adapter's base is known: scored before too
    answers = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(answers) == 4 and all(isinstance(row["after"], str) for row in answers)
    if "lora" in yaml:  # trainable = the adapter's weights only
        assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]


@needs_lf
def test_qlora_trains_in_4bit_and_scores_on_a_4bit_base(tiny_model_64, tmp_path):
    out = tmp_path / "qlora"
    done = train("qlora.yaml", tiny_model_64, out)
    assert "Quantizing model to 4 bit with bitsandbytes" in done.stdout + done.stderr
    assert all(math.isfinite(x) for x in losses(out)) and (out / "adapter_model.safetensors").is_file()
    assert score(out, "--load_in_4bit", "true")["after"]["synthetic"]["n"] == 4


@needs_lf
def test_reward_model_accuracy_read_back_equals_llamafactorys_own(tiny_model, tmp_path):
    out = tmp_path / "reward"
    # fp32 and a large rate: the tiny model's margins are then far above rounding, so both readings must agree
    train("reward.yaml", tiny_model, out, "bf16=false", "learning_rate=0.01")
    assert (out / "value_head.safetensors").is_file()
    metrics = json.loads((out / "all_results.json").read_text())
    done = run_script("configs/llamafactory/score.py", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads((out / "metrics.json").read_text())
    assert ours["pairwise_accuracy_after"]["all"] == pytest.approx(metrics["eval_accuracy"], abs=1e-9)
    assert set(ours["pairwise_accuracy_after"]) == {"all", "markdown_fence", "missing_key", "wrong_type",
                                                    "unnormalised_date", "yaml", "hallucinated_value", "prose"}


@pytest.mark.slow  # 135 s in a fresh-clone CI run (DeepSpeed's op built, two processes): the default suite's largest
@needs_lf          # item; ZeRO-2 on two CPU processes stays in it through tests/test_launchers.py
def test_zero2_runs_two_processes(tiny_model, tmp_path):
    out = tmp_path / "zero2"
    with one_at_a_time("launchers"):  # two processes and DeepSpeed's shared-memory op, as tests/test_launchers.py
        done = train("sft_full_zero2.yaml", tiny_model, out, env={
            "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2",  # DeepSpeed's shm op, built for this environment's torch
            "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(LF_BIN.parent / "torch_extensions"))})
    log = done.stdout + done.stderr
    assert all(f"Process rank: {rank}, world size: 2" in log for rank in (0, 1))  # two processes, one job
    # ZeRO-2: each process saved only its own share of the Adam states
    shards = sorted(path.name for path in (out / "checkpoint-3").glob("global_step3/*optim_states.pt"))
    assert shards == ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert all(math.isfinite(x) for x in losses(out)) and (out / "model.safetensors").is_file()  # whole, gathered
    assert score(out)["after"]["synthetic"]["n"] == 4


@needs_lf
def test_smollm2_template_writes_what_smollm2s_chat_template_writes():
    """LLaMA-Factory formats turns with its own template, the TRL scripts with the tokenizer's: the same tokens."""
    from ftlab.data import load_split
    from ftlab.models import resolve_model

    path = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    messages = load_split("sft_eval")[0]["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    code = ("import json, sys\nfrom transformers import AutoTokenizer\n"
            "from llamafactory.data import get_template_and_fix_tokenizer\nfrom llamafactory.hparams import DataArguments\n"
            "tok = AutoTokenizer.from_pretrained(sys.argv[1]); messages = json.loads(sys.argv[2])\n"
            "template = get_template_and_fix_tokenizer(tok, DataArguments(template='smollm2'))\n"
            "prompt, answer = template.encode_oneturn(tok, messages[1:], system=messages[0]['content'])\n"
            "print(json.dumps([prompt, answer]))\n")
    done = subprocess.run([str(LF_BIN / "python"), "-c", code, path, json.dumps(messages)], text=True,
                          capture_output=True, timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    prompt_ids, answer_ids = json.loads(done.stdout.strip().splitlines()[-1])
    assert prompt_ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert prompt_ids + answer_ids == tokenizer(whole, add_special_tokens=False)["input_ids"]


def test_score_errors_are_one_line(tmp_path):
    done = run_script("configs/llamafactory/score.py", str(tmp_path / "absent"))
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "llamafactory-cli train" in done.stderr
    done = run_script("configs/llamafactory/score.py", str(tmp_path))  # a folder, but no finished run
    assert done.returncode == 1 and "not a finished LLaMA-Factory run" in done.stderr.strip().splitlines()[-1]


def test_committed_llamafactory_data_is_current(tmp_path):
    """data/llamafactory/ is what data/to_llamafactory.py writes: never edited by hand."""
    done = subprocess.run([sys.executable, str(ROOT / "data" / "to_llamafactory.py"), "--out", str(tmp_path)],
                          text=True, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (ROOT / "data" / "llamafactory" / path.name).read_bytes(), path.name
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    for name, entry in info.items():  # every registered file exists, relative to dataset_dir as LLaMA-Factory reads it
        assert (ROOT / "data" / "llamafactory" / entry["file_name"]).is_file(), name
    pairs = [json.loads(line) for line in (tmp_path / "preference_train.jsonl").read_text().splitlines()]
    assert len(pairs) == 330 and all(isinstance(p["chosen"], dict) and p["chosen"]["role"] == "assistant" for p in pairs)
