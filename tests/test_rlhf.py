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
    "kto": [0.5, 0.5, 0.5054, 0.4992],  # its training rows shuffled, good and bad mixed (train_dpo.unpaired)
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
        assert 0 <= metrics["held_out_pairs"]["chosen_above_rejected"] <= 70
    assert metrics["held_out_pairs"]["pairs"] == 70 and math.isfinite(metrics["held_out_pairs"]["mean_margin"])
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
    for name in (reward_dir.name, "verifiable_reward", "total"):  # groups whose answers all scored the same
        assert len(steps[f"tied_groups/{name}"]) == 4 and all(0 <= v <= 1 for v in steps[f"tied_groups/{name}"])
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
    assert list(metrics["per_step"]) == ["reward", "rewards/verifiable_reward/mean", "kl", "completions/mean_length",
                                         "tied_groups/verifiable_reward", "tied_groups/total"]
    assert all(0 <= r <= 1 for r in metrics["per_step"]["reward"])
    # every answer scores 0, so every group is tied: no signal, and the log says so at each of the 4 steps
    assert metrics["per_step"]["tied_groups/total"] == [1.0] * 4


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


# ---- held-out pairs: counted per pair, KTO's rows interleaved -----------------------------------------------
def load_script(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "03_rlhf" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"rlhf_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_kto_rows_mix_good_and_bad_answers():
    """Each pair gives KTO a good and a bad row. Held out: side by side (every eval batch of 2 is one pair, so
    each yields a margin); for training: shuffled, so the first steps (read in order) see both kinds."""
    from ftlab.data import preference_dataset

    train_pairs, held_out = load_preference()
    unpaired = load_script("train_dpo").unpaired
    rows = unpaired(preference_dataset(held_out))
    assert rows["label"] == [True, False] * len(held_out)
    assert all(rows[2 * i]["prompt"] == rows[2 * i + 1]["prompt"] for i in range(len(held_out)))
    assert [rows[2 * i]["completion"] for i in range(len(held_out))] == [p["chosen"] for p in held_out]
    first = unpaired(preference_dataset(train_pairs), 42)["label"][:160]  # kto.yaml's 20 steps of 8, in order
    assert 0.35 < sum(first) / len(first) < 0.65


def dpo_implicit_rewards(policy_dir, reference_dir, pairs, beta):
    """beta x (log pi(answer) - log pi_ref(answer)) of each pair's chosen and rejected answer, tokenized as TRL's
    DPOTrainer does (the completion is what follows the chat-templated prompt), one answer at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    models = [AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval() for d in (policy_dir, reference_dir)]

    def logp(model, prompt, answer):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]
        ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
        start = next((i for i, (a, b) in enumerate(zip(prompt_ids, ids)) if a != b), len(prompt_ids))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        token_logps = logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        return token_logps[start - 1:].sum().item()

    return [tuple(beta * (logp(models[0], p["prompt"], p[kind]) - logp(models[1], p["prompt"], p[kind]))
                  for kind in ("chosen", "rejected")) for p in pairs]


def test_dpo_counts_held_out_pairs_over_unequal_batches(tiny_model, tmp_path):
    """5 held-out pairs in eval batches of 4 (4 + 1): the reported accuracy is a count over the 5 pairs, not the
    mean of the two batches' means, and the margin a mean over pairs."""
    out = tmp_path / "dpo"
    metrics = train("dpo", tiny_model, out, "--eval_pairs", "5", "--per_device_eval_batch_size", "4",
                    "--eval_before", "false", "--save_strategy", "no")
    rewards = dpo_implicit_rewards(out, tiny_model, load_preference(eval_pairs=5)[1], metrics["beta"])
    right = sum(chosen > rejected for chosen, rejected in rewards)
    assert metrics["preference_eval"]["eval_rewards/accuracies"] == pytest.approx(right / 5), rewards
    assert metrics["held_out_pairs"]["chosen_above_rejected"] == right
    assert metrics["held_out_pairs"]["pairs"] == 5
    margin = sum(chosen - rejected for chosen, rejected in rewards) / 5
    assert metrics["held_out_pairs"]["mean_margin"] == pytest.approx(margin, rel=1e-3, abs=1e-5)


# ---- GRPO's advantages and the groups that teach nothing ----------------------------------------------------
def test_tied_groups_counts_each_group_not_the_batch():
    """One group whose four answers tie on every reward, one that varies: half the groups carry no signal. TRL's
    frac_reward_zero_std under normalize_then_sum reads the batch's std, which is not 0 here (it reports 0.0)."""
    from ftlab.rewards import grpo_advantages, tied_groups

    rewards = torch.tensor([[0.7, 0.5]] * 4 + [[-1.0, 0.0], [2.0, 1.0], [0.5, 0.5], [1.0, 0.25]])
    assert tied_groups(rewards, 4, ["model", "json"]) == {"model": 0.5, "json": 0.5, "total": 0.5}
    advantages = grpo_advantages(rewards, 4)
    assert advantages[:4].abs().max() < 1e-6 and advantages[4:].abs().max() > 0.5  # the tied group: no gradient
    assert tied_groups(rewards[:4], 4, ["model", "json"], weights=[0.2, 1.0]) == {"model": 1.0, "json": 1.0, "total": 1.0}
    varied_json = rewards.clone()
    varied_json[0, 1] = 0.75  # the first group now differs on json only: tied on model, not on json or the total
    assert tied_groups(varied_json, 4, ["model", "json"]) == {"model": 0.5, "json": 0.0, "total": 0.0}


def captured_grpo_advantages(model_dir, tmp_path, rewards_per_func, **config):
    """Run one GRPO step of TRL's own trainer on the tiny model with reward functions that return the given
    scores, and return the advantages TRL computed from them."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from ftlab.trl_cpu import install

    install()
    funcs = []
    for column in rewards_per_func.T.tolist():
        def reward(completions, column=column, **kwargs):
            return column[:len(completions)]
        reward.__name__ = f"reward_{len(funcs)}"
        funcs.append(reward)
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=4, bf16=False, use_cpu=True, report_to="none", save_strategy="no",
                      beta=0.0, logging_steps=1, **config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=funcs, args=args,
                          train_dataset=Dataset.from_list([{"prompt": "a b"}, {"prompt": "c d"}]),
                          processing_class=tokenizer)
    captured = []
    generate_and_score = trainer._generate_and_score_completions

    def capture(*a, **k):
        output = generate_and_score(*a, **k)
        captured.append(output["advantages"].detach().clone())
        return output

    trainer._generate_and_score_completions = capture
    trainer.train()
    return captured[0]


@pytest.mark.parametrize("config", [
    {"multi_objective_aggregation": "normalize_then_sum", "scale_rewards": "group"},
    {"multi_objective_aggregation": "normalize_then_sum", "scale_rewards": "none"},  # ignored there
    {"multi_objective_aggregation": "sum_then_normalize", "scale_rewards": "group"},
])
def test_grpo_advantages_match_trl(config, tiny_model, tmp_path):
    """ftlab.rewards.grpo_advantages (what the README describes) against TRL's GRPOTrainer. Group 1 ties on the
    JSON reward and differs by 0.01-0.03 on the reward model: under normalize_then_sum that gap alone sets its
    advantages, at the scale of group 2's JSON 0 against 1."""
    from ftlab.rewards import grpo_advantages

    rewards = torch.tensor([[1.0, 0.5], [1.01, 0.5], [0.99, 0.5], [1.02, 0.5],
                            [-3.0, 0.0], [5.0, 1.0], [0.0, 0.5], [2.0, 0.25]])
    trl_advantages = captured_grpo_advantages(tiny_model, tmp_path, rewards, **config)
    ours = grpo_advantages(rewards, 4, aggregation=config["multi_objective_aggregation"],
                           scale_rewards=config["scale_rewards"])
    assert torch.allclose(trl_advantages, ours, atol=1e-4), (trl_advantages, ours)
    if config["multi_objective_aggregation"] == "normalize_then_sum":  # group 1's 0.03 counts as a whole reward
        assert trl_advantages[:4].std() > 0.4 * trl_advantages[4:].std()
        wider = rewards.clone()
        wider[:4, 0] = 1 + 100 * (rewards[:4, 0] - 1)  # the same order at 100 times the gap: the same advantages
        assert torch.allclose(grpo_advantages(wider, 4), ours, rtol=0.01)  # (but for TRL's eps of 1e-4)


def test_reward_model_with_lora_trains_and_saves_its_head(tiny_model, tmp_path):
    """--use_peft: LoRA on the body, and the new score head (random at the start) trains in full and is saved
    with it, merged into one folder that train_rl.py loads as its reward model."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "reward_lora"
    metrics = train("reward", tiny_model, out, "--use_peft", "true", "--lora_r", "4", "--lora_target_modules",
                    "q_proj", "v_proj")
    torch.manual_seed(42)  # reward.yaml's seed: the head the script started from
    start = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).score.weight
    saved = load_file(out / "model.safetensors")
    assert not torch.equal(saved["score.weight"], start.detach())  # the head trained
    assert not any("lora_" in name for name in saved)  # merged: a whole model, not an adapter
    assert metrics["pairwise_accuracy_after"]["all"] >= 0
    train("grpo", tiny_model, tmp_path / "grpo", *RL, "--reward_model", str(out), "--eval_before", "false",
          "--max_steps", "1")


# ---- what the "made-up value" pairs teach ------------------------------------------------------------------
def test_readme_describes_the_made_up_value_pairs_as_the_data_has_them():
    """A made-up value is either a null filled in with something plausible or another value the text gives
    (a distractor): the README's counts are the data's, and no pair teaches that emptying a right value is wrong."""
    from pathlib import Path

    pairs = [p for pair_set in load_preference() for p in pair_set]
    fills = swaps = empties = 0
    for pair in pairs:
        chosen = json.loads(pair["chosen"][0]["content"])
        try:
            rejected = json.loads(pair["rejected"][0]["content"])
        except json.JSONDecodeError:  # prose, fence, YAML
            rejected = None
        if isinstance(rejected, dict):
            empties += any(chosen[k] is not None and rejected.get(k, "") is None for k in chosen)
        if pair["error"] == "hallucinated_value":
            field = next(k for k in chosen if chosen[k] != rejected[k])
            fills, swaps = fills + (chosen[field] is None), swaps + (chosen[field] is not None)
    readme = (Path(__file__).resolve().parents[1] / "03_rlhf" / "README.md").read_text(encoding="utf-8")
    assert f"{fills} of the {fills + swaps} made-up-value pairs fill a field the text leaves `null`" in readme
    assert f"the other {swaps} take a value the text gives" in readme
    assert empties == 0 and "no pair where the rejected answer empties a value" in readme
    assert "the text never names" not in readme and "none fills a field the text leaves empty" not in readme
