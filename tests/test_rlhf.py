"""03_rlhf end to end on the tiny model: the reward model, DPO (and its KTO/ORPO switches), GRPO/RLOO, resume."""

import json
import math

import pytest
import torch
from conftest import interrupted_at_step_2, run_script
from safetensors.torch import load_file

from ftlab.data import ERROR_KINDS, load_preference

# Recorded on the CPU with OMP_NUM_THREADS=1, fp32, 4 steps of 2 pairs (reward, DPO) or 4 answers (RL).
# (DPO's first two losses are ln 2: the policy starts equal to its reference, and warm-up makes step 1's rate 0.)
EXPECTED = {
    "reward": [0.6939, 0.6944, 0.6931, 0.6917],
    "dpo": [0.6931, 0.6931, 0.6850, 0.6806],
    "kto": [0.5, 0.5, 0.5002, 0.4995],
    "orpo": [6.3032, 6.2992, 6.2687, 6.2586],
}
EXPECTED_RL_REWARDS = [-0.0255, -0.0225, -0.0244, -0.0111]  # the reward model's mean score of GRPO's samples
QUICK = ["--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "1", "--bf16", "false", "--dtype", "float32",
         "--per_device_train_batch_size", "2", "--eval_samples", "4", "--max_new_tokens", "8", "--handwritten_file",
         "none", "--probe_file", "none", "--save_steps", "2", "--save_total_limit", "2", "--report_to", "none"]
SCRIPTS = {"reward": "03_rlhf/train_reward.py", "dpo": "03_rlhf/train_dpo.py", "kto": "03_rlhf/train_dpo.py",
           "orpo": "03_rlhf/train_dpo.py", "grpo": "03_rlhf/train_rl.py", "rloo": "03_rlhf/train_rl.py"}
CONFIGS = {"reward": "reward", "dpo": "dpo", "kto": "kto", "orpo": "orpo", "grpo": "rl", "rloo": "rloo"}


def train(stage, model, out, *extra):
    result = run_script(SCRIPTS[stage], "--config", f"03_rlhf/{CONFIGS[stage]}.yaml", "--model_name_or_path",
                        str(model), "--output_dir", str(out), *QUICK, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def changed(before: dict, after: dict) -> list[str]:
    """Names of the tensors both state dicts hold that differ."""
    return [name for name in before if name in after and not torch.equal(before[name], after[name])]


@pytest.fixture(scope="module")
def reward_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward") / "run"
    return out, train("reward", tiny_model, out)


# ---- stage 2: the reward model -----------------------------------------------------------------------------
def test_reward_model_trains_and_reports_accuracy_per_kind(reward_run, tiny_model):
    out, metrics = reward_run
    assert metrics["train_losses"] == pytest.approx(EXPECTED["reward"], abs=2e-3)
    for when in ("before", "after"):
        accuracy = metrics[f"pairwise_accuracy_{when}"]
        assert set(accuracy) == {"all", *ERROR_KINDS} and all(0 <= v <= 1 for v in accuracy.values())
    assert [e["error"] for e in metrics["examples"]] == ["prose", "wrong_type", "hallucinated_value"]
    assert all(math.isfinite(e["chosen_reward"]) and math.isfinite(e["rejected_reward"]) for e in metrics["examples"])
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["architectures"] == ["LlamaForSequenceClassification"]
    saved, base = load_file(out / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert "score.weight" in saved and len(changed(base, saved)) > 10  # the body trained, not only the new head


# ---- DPO and its switches ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dpo", "kto", "orpo"])
def test_preference_methods_train_and_score(method, tiny_model, tmp_path):
    out = tmp_path / method
    metrics = train(method, tiny_model, out)
    assert metrics["method"] == method
    assert metrics["train_losses"] == pytest.approx(EXPECTED[method], abs=2e-3)
    assert set(metrics["before"]) == set(metrics["after"]) == {"synthetic"}
    assert "eval_loss" in metrics["preference_eval"] and math.isfinite(metrics["preference_eval"]["eval_loss"])
    if method != "kto":  # paired methods report the implicit reward's accuracy and margin on held-out pairs
        assert 0 <= metrics["preference_eval"]["eval_rewards/accuracies"] <= 1
        assert math.isfinite(metrics["preference_eval"]["eval_rewards/margins"])
    base, saved = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert len(changed(base, saved)) > 10


def test_dpo_with_lora_trains_only_the_adapter(tiny_model, tmp_path):
    """--use_peft: the reference is the same model with the adapter switched off, so no copy is made."""
    out = tmp_path / "lora"
    metrics = train("dpo", tiny_model, out, "--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "q_proj",
                    "v_proj", "--eval_before", "false")
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert metrics["trainable_parameters"] == sum(t.numel() for t in adapter.values())
    assert metrics["train_losses"][2] < metrics["train_losses"][0]  # ln 2 at the start, then it learns


def test_dpo_resume_continues_the_same_run(tiny_model, tmp_path):
    """Stopped after step 2 and resumed: steps 3-4 log the losses of the uninterrupted run."""
    full = train("dpo", tiny_model, tmp_path / "full", "--eval_before", "false")
    resumed_dir = interrupted_at_step_2(tmp_path / "full", tmp_path)
    resumed = train("dpo", tiny_model, resumed_dir, "--resume", "true", "--eval_before", "false")
    assert resumed["train_losses"][2:] == pytest.approx(full["train_losses"][2:], abs=1e-4)  # (1-2: the checkpoint's log)


def test_unknown_method_is_one_line(tiny_model, tmp_path):
    result = run_script("03_rlhf/train_dpo.py", "--config", "03_rlhf/dpo.yaml", "--method", "ppo")
    assert result.returncode == 1 and result.stderr.strip() == "error: --method 'ppo': must be one of dpo, kto, orpo"


# ---- stage 3: online RL ---------------------------------------------------------------------------------------
RL = ["--max_completion_length", "12", "--per_device_train_batch_size", "4", "--num_generations", "2"]


def test_rl_loads_the_saved_reward_model(reward_run, tiny_model, tmp_path):
    """GRPO scores its samples with the folder train_reward.py wrote, plus the verifiable reward."""
    reward_dir, _ = reward_run
    out = tmp_path / "grpo"
    metrics = train("grpo", tiny_model, out, *RL, "--reward_model", str(reward_dir))
    steps = metrics["per_step"]
    assert steps[f"rewards/{reward_dir.name}/mean"] == pytest.approx(EXPECTED_RL_REWARDS, abs=2e-3)
    assert len(steps["rewards/verifiable_reward/mean"]) == 4 and len(steps["kl"]) == 4  # beta > 0: KL is logged
    assert all(0 < n <= 12 for n in steps["completions/mean_length"])
    assert (out / "reward_curve.png").stat().st_size > 0
    base, saved = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert len(changed(base, saved)) > 10


def test_rloo_switch_trains_against_the_reward_model(reward_run, tiny_model, tmp_path):
    reward_dir, _ = reward_run
    out = tmp_path / "rloo"
    metrics = train("rloo", tiny_model, out, *RL, "--reward_model", str(reward_dir), "--eval_before", "false")
    assert metrics["method"] == "rloo" and len(metrics["per_step"]["kl"]) == 4
    assert all(math.isfinite(r) for r in metrics["per_step"]["reward"])
    base, saved = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert len(changed(base, saved)) > 10


def test_rl_with_the_verifiable_reward_alone(tiny_model, tmp_path):
    """No reward model needed: RL with verifiable rewards (the tiny model's gibberish scores 0 throughout)."""
    metrics = train("grpo", tiny_model, tmp_path / "json", *RL, "--rewards", "json", "--eval_before", "false")
    assert list(metrics["per_step"]) == ["reward", "rewards/verifiable_reward/mean", "kl", "completions/mean_length"]
    assert all(0 <= r <= 1 for r in metrics["per_step"]["reward"])


@pytest.mark.parametrize("flags, message", [
    (["--reward_model", "no/such/folder"], ("error: --reward_model no/such/folder: no model there; run "
                                            "03_rlhf/train_reward.py first, or use --rewards json")),
    (["--rewards", "human"], "error: --rewards 'human': must be one of model, json, model+json"),
])
def test_rl_refuses_bad_rewards_in_one_line(flags, message, tmp_path):
    result = run_script("03_rlhf/train_rl.py", "--config", "03_rlhf/rl.yaml", "--output_dir", str(tmp_path / "o"),
                        *flags)
    assert result.returncode == 1 and result.stderr.strip() == message


def test_rl_refuses_a_causal_lm_as_reward_model(tiny_model, tmp_path):
    result = run_script("03_rlhf/train_rl.py", "--config", "03_rlhf/rl.yaml", "--reward_model", str(tiny_model),
                        "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1 and "not a reward model (it needs one output, num_labels=1)" in result.stderr


# ---- the verifiable reward against the preference data ------------------------------------------------------
def test_verifiable_reward_ranks_the_correct_json_above_every_wrong_answer():
    from ftlab.rewards import json_reward

    train_pairs, held_out = load_preference()
    seen = set()
    for pair in train_pairs + held_out:
        gold = json.loads(pair["chosen"][0]["content"])
        assert json_reward(pair["chosen"][0]["content"], gold) == 1.0
        assert json_reward(pair["rejected"][0]["content"], gold) < 1.0, pair
        seen.add(pair["error"])
    assert seen == set(ERROR_KINDS)
