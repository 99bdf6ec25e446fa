"""04_moe and ftlab/moe.py on tiny models: upcycling is exact, training works with its aux loss, the router
statistics count right, LoRA reaches the fused experts, and a ready-made MoE checkpoint trains too."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, run_script
from safetensors.torch import load_file

from ftlab.errors import LearnerError
from ftlab.moe import expert_load, total_and_active_parameters, upcycle

SCRIPT = "04_moe/train.py"
# Recorded on the CPU with OMP_NUM_THREADS=1 (`make test`): the tiny model upcycled to 4 experts (top-2),
# 4 steps, lr 1e-3, batch 8, seed 42, fp32, router_aux_loss_coef 0.01, expert_noise 0.
EXPECTED_LOSSES = [6.2576, 6.2716, 6.2266, 6.2028]


def train(model, out, *extra):
    args = ["--config", "04_moe/config.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "1", "--save_steps", "2",
            "--eval_samples", "4", "--max_new_tokens", "8", "--load_samples", "8", "--bf16", "false",
            "--expert_noise", "0", *extra]  # identical experts: the start is the dense model, as the losses were recorded
    result = run_script(SCRIPT, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "run"
    return out, train(tiny_model, out)


def test_upcycled_moe_computes_the_dense_function(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dense = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = tokenizer(["Hi, I'm Ana Ruiz from Porto, 34.", "ok"], return_tensors="pt", padding=True)
    for num_experts, top_k in ((4, 2), (8, 1), (3, 3)):
        moe = upcycle(dense, num_experts, top_k)
        with torch.no_grad():
            assert torch.allclose(moe(**batch).logits, dense(**batch).logits, atol=1e-5)
        experts = moe.model.layers[0].mlp.experts
        assert experts.gate_up_proj.shape == (num_experts, 2 * dense.config.intermediate_size, dense.config.hidden_size)
    noisy = upcycle(dense, 4, 2, noise=0.1)  # the experts differ now, so the function does too
    with torch.no_grad():
        assert not torch.allclose(noisy(**batch).logits, dense(**batch).logits, atol=1e-3)
    total, active = total_and_active_parameters(moe)
    assert active == total  # top_k = num_experts: every expert runs
    with pytest.raises(ValueError, match="top_k"):
        upcycle(dense, 2, 3)


@pytest.mark.parametrize("flag", ["mlp_bias", "attention_bias"])
def test_upcycling_refuses_a_dense_model_with_biases(flag, tiny_model):
    """Mixtral's layers hold no biases: a Llama with mlp_bias=True (or attention_bias=True) cannot be copied exactly,
    so upcycle says so in one line instead of dropping the biases (which would change the function it claims to
    keep)."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    config = AutoModelForCausalLM.from_pretrained(tiny_model).config
    setattr(config, flag, True)
    torch.manual_seed(0)
    dense = LlamaForCausalLM(config)
    layer = dense.model.layers[0]
    assert (layer.mlp.down_proj if flag == "mlp_bias" else layer.self_attn.q_proj).bias is not None
    with pytest.raises(ValueError, match=flag) as refused:
        upcycle(dense, 4, 2)
    assert "\n" not in str(refused.value) and isinstance(refused.value, LearnerError)  # a script: one error: line


def test_identical_experts_give_the_router_no_gradient_so_the_config_adds_noise(tiny_model):
    """With expert_noise 0 every expert computes the same function and the top-k weights sum to one, so the task loss
    cannot tell routings apart: the router's gradient is float rounding, and only the aux loss moves it. config.yaml's
    expert_noise makes the experts differ, so the aux-on/aux-off pair the README compares can learn a routing."""
    import yaml
    from transformers import AutoModelForCausalLM

    noise = yaml.safe_load((ROOT / "04_moe" / "config.yaml").read_text())["expert_noise"]
    assert noise > 0
    dense = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.randint(0, dense.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    router = {}
    for expert_noise in (0.0, noise):
        moe = upcycle(dense, 4, 2, noise=expert_noise)  # output_router_logits off: the task loss alone
        moe(input_ids=ids, labels=ids).loss.backward()
        router[expert_noise] = min(layer.mlp.gate.weight.grad.norm().item() for layer in moe.model.layers)
        assert all(layer.mlp.experts.down_proj.grad.norm() > 0 for layer in moe.model.layers)
    assert router[0.0] < 1e-3 * router[noise], router
    readme = " ".join((ROOT / "04_moe" / "README.md").read_text(encoding="utf-8").split())
    aux_off = [line for line in readme.split("python 04_moe/train.py") if "--router_aux_loss_coef 0 " in line]
    assert aux_off and not any("--expert_noise 0 " in line for line in aux_off), aux_off


@pytest.mark.parametrize("noise, warns", [("0", True), ("0.01", False)])
def test_the_aux_loss_off_with_identical_experts_warns(noise, warns, tiny_model, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("")  # a non-empty output_dir: the script stops at its check, after the warning
    result = run_script(SCRIPT, "--config", "04_moe/config.yaml", "--model_name_or_path", str(tiny_model),
                        "--router_aux_loss_coef", "0", "--expert_noise", noise, "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1 and "not empty" in result.stderr.strip().splitlines()[-1], result.stderr[-500:]
    assert ("warning: --expert_noise 0 and --router_aux_loss_coef 0" in result.stderr) == warns


def test_losses_are_finite_match_the_recorded_run_and_log_the_aux_loss(run):
    _, metrics = run
    assert metrics["train_losses"] == pytest.approx(EXPECTED_LOSSES, abs=2e-3)
    assert len(metrics["aux_losses"]) == 4 and all(1.9 < a < 4.1 for a in metrics["aux_losses"])  # top_k..num_experts
    assert metrics["upcycle_logit_gap"] < 1e-5
    assert metrics["num_experts"] == 4 and metrics["top_k"] == 2
    assert metrics["active_parameters_per_token"] < metrics["total_parameters_moe"]
    assert metrics["experts_implementation"] == "grouped_mm"  # on a CPU: transformers' default, as recorded


def test_router_and_experts_changed_and_outputs_are_written(run, tiny_model):
    from transformers import AutoModelForCausalLM

    out, metrics = run
    reloaded = AutoModelForCausalLM.from_pretrained(out)  # (the file holds Mixtral's original per-expert layout;
    trained = reloaded.state_dict()                     # transformers fuses it back into 3-D tensors on load)
    start = upcycle(AutoModelForCausalLM.from_pretrained(tiny_model), 4, 2, seed=42).state_dict()
    for name in ("model.layers.0.mlp.gate.weight", "model.layers.1.mlp.experts.gate_up_proj",
                 "model.layers.1.mlp.experts.down_proj"):
        assert not torch.equal(trained[name], start[name]), name
    for file in ("expert_load.png", "predictions.jsonl", "loss_curve.png", "config.json"):
        assert (out / file).is_file(), file
    loads = metrics["expert_load"]
    assert set(loads) == {"before", "after"} and len(loads["after"]) == 2 and len(loads["after"][0]) == 4
    assert all(sum(row) == pytest.approx(1, abs=1e-3) for row in loads["after"])
    assert type(reloaded).__name__ == "MixtralForCausalLM" and reloaded.config.num_local_experts == 4


@pytest.mark.slow  # (12 s; kept out of the default suite, which is near its 15-minute limit)
def test_without_the_aux_loss_none_is_logged(tiny_model, tmp_path):
    metrics = train(tiny_model, tmp_path / "noaux", "--router_aux_loss_coef", "0", "--eval_before", "false",
                    "--save_strategy", "no")  # (train's --expert_noise 0: the script warns, below)
    assert metrics["aux_losses"] == [] and metrics["router_aux_loss_coef"] == 0
    assert all(math.isfinite(x) for x in metrics["train_losses"])


def test_lora_trains_attention_and_experts_and_leaves_the_router_frozen(tiny_model, tmp_path):
    """config.yaml's LoRA targets after a few steps: the adapter, merged into the upcycled start, changes the
    attention projections and every expert weight (one rank-r pair per expert) and leaves the router as it was."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    metrics = train(tiny_model, tmp_path / "lora", "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
                    "--eval_before", "false", "--save_strategy", "no")
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"] / 3
    adapter = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    assert not [name for name in adapter if ".mlp.gate." in name], sorted(adapter)  # no adapter on the router
    assert {tuple(t.shape) for name, t in adapter.items() if "experts" in name and "lora_A" in name} == {
        (4 * 4, 32), (4 * 4, 64)}  # rank 4 for each of the 4 experts, in gate_up_proj and down_proj alike
    start = upcycle(AutoModelForCausalLM.from_pretrained(tiny_model), 4, 2, seed=42)
    before = {name: t.clone() for name, t in start.state_dict().items()}
    after = PeftModel.from_pretrained(start, tmp_path / "lora").merge_and_unload().state_dict()
    changed = {name for name in before if not torch.equal(after[name], before[name])}
    for layer in range(2):
        prefix = f"model.layers.{layer}."
        assert prefix + "mlp.gate.weight" not in changed  # the router: frozen
        for part in ("self_attn.q_proj.weight", "self_attn.v_proj.weight", "mlp.experts.gate_up_proj",
                     "mlp.experts.down_proj"):
            assert prefix + part in changed, part


class FakeMoE(torch.nn.Module):
    """Returns fixed router logits: 2 layers, 4 experts, 3 tokens per row (the last of row 2 is padding); or the
    `layers` given (each [6 tokens, experts]), with `top_k` choices per token."""

    def __init__(self, layers=None, top_k=1):
        super().__init__()
        self.layers = layers
        self.config = SimpleNamespace(num_local_experts=4, num_experts_per_tok=top_k,
                                      num_hidden_layers=len(layers) if layers else 2)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids, attention_mask, output_router_logits):
        if self.layers:
            return SimpleNamespace(router_logits=self.layers)
        layer0 = torch.tensor([[9, 0, 0, 0], [9, 0, 0, 0], [0, 9, 0, 0],  # row 1: experts 0, 0, 1
                               [0, 0, 9, 0], [0, 0, 9, 0], [0, 0, 0, 9]], dtype=torch.float)  # row 2: 2, 2, (pad)
        layer1 = torch.roll(layer0, 1, dims=1)  # every choice moved one expert up
        return SimpleNamespace(router_logits=(layer0, layer1))


class FakeTokenizer:
    def __call__(self, texts, return_tensors, padding):
        batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
        return SimpleNamespace(**batch, to=lambda device: batch)


def test_expert_load_counts_each_tokens_choice_and_skips_padding():
    load = expert_load(FakeMoE(), FakeTokenizer(), ["a", "b"])
    assert torch.allclose(load, torch.tensor([[0.4, 0.2, 0.4, 0.0], [0.0, 0.4, 0.2, 0.4]]))


def test_the_aux_loss_f_e_counts_tokens_per_expert_and_sums_to_top_k():
    """transformers' load-balancing loss is num_experts x sum_e f_e x P_e with f_e the fraction of tokens that have e
    among their top-k: the f_e sum to top_k, so an even spread gives top_k. expert_load's share of the choices is
    f_e / top_k; the texts that define f_e say so."""
    import re

    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func


    num, k = 4, 2
    logits = torch.randn(6, num, generator=torch.Generator().manual_seed(0))
    probs = logits.softmax(dim=-1)
    f = torch.zeros(num).index_add_(0, probs.topk(k).indices.flatten(), torch.ones(6 * k)) / 6
    assert f.sum().item() == pytest.approx(k)
    assert load_balancing_loss_func((logits,), num, k).item() == pytest.approx(num * (f * probs.mean(dim=0)).sum().item())
    even = torch.tensor([[9.0, 9, 0, 0], [0, 0, 9, 9]]).repeat(3, 1)  # every expert in half the tokens' top-2
    assert load_balancing_loss_func((even,), num, k).item() == pytest.approx(k, abs=1e-3)

    kept = [0, 1, 2, 3, 4]  # FakeTokenizer pads the last token
    f_kept = torch.zeros(num).index_add_(0, probs[kept].topk(k).indices.flatten(), torch.ones(5 * k)) / 5
    assert torch.allclose(expert_load(FakeMoE([logits], top_k=k), FakeTokenizer(), ["a", "b"])[0] * k, f_kept)

    for path in ("04_moe/README.md", "ftlab/moe.py"):
        text = " ".join((ROOT / path).read_text(encoding="utf-8").split())
        assert not re.search(r"f_e (is|the) (the )?share", text), path  # a share would sum to 1, not to top_k
        assert "sum to top_k" in text, path


@pytest.fixture(scope="module")
def tiny_olmoe(tiny_model, tmp_path_factory):
    """A tiny random OLMoE (the architecture of allenai/OLMoE-1B-7B) with the tiny model's tokenizer."""
    from transformers import AutoTokenizer, OlmoeConfig, OlmoeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    config = OlmoeConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("olmoe")
    model = OlmoeForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_ready_made_moe_checkpoint_trains_with_upcycle_false(tiny_olmoe, tmp_path):
    metrics = train(tiny_olmoe, tmp_path / "olmoe", "--upcycle", "false", "--eval_before", "false",
                    "--save_strategy", "no")
    assert metrics["num_experts"] == 4 and len(metrics["aux_losses"]) == 4
    assert all(math.isfinite(x) for x in metrics["train_losses"])
    assert len(metrics["expert_load"]["after"]) == 2


@pytest.mark.slow  # (8 s each; as above)
@pytest.mark.parametrize("which, flag, says", [
    ("olmoe", "true", "copies a Llama-architecture MLP"),
    ("dense", "false", "is not a Mixture-of-Experts model"),
])
def test_wrong_model_for_the_mode_is_one_line(which, flag, says, tiny_olmoe, tiny_model, tmp_path):
    model = tiny_olmoe if which == "olmoe" else tiny_model
    result = run_script(SCRIPT, "--config", "04_moe/config.yaml", "--model_name_or_path", str(model), "--upcycle",
                        flag, "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1 and says in result.stderr.strip().splitlines()[-1]


# ---- The experts' number format under autocast (the GPU path, checked on the CPU and, under `gpu`, on CUDA) -----
def record_grouped_mm(monkeypatch) -> list[tuple]:
    """Every torch.nn.functional.grouped_mm call's (input dtype, weight dtype, device): what the experts multiply
    in. (transformers' grouped_mm backend looks the function up at each call, so the spy sees all of them.)"""
    calls, grouped_mm = [], torch.nn.functional.grouped_mm

    def spy(mat_a, mat_b, **kwargs):
        calls.append((mat_a.dtype, mat_b.dtype, mat_a.device.type))
        return grouped_mm(mat_a, mat_b, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grouped_mm", spy)
    return calls


def experts_seen(model, device: str, ids) -> tuple[set, set]:
    """Under bf16 autocast on `device`: the dtypes grouped_mm multiplies in, and what the experts modules return
    (a forward hook on each), for one forward and backward pass."""
    outputs = set()
    hooks = [m.mlp.experts.register_forward_hook(lambda mod, args, out: outputs.add(out.dtype))
             for m in model.model.layers]
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    for hook in hooks:
        hook.remove()
    return outputs, {p.grad.dtype for n, p in model.named_parameters() if "experts" in n}


def test_under_bf16_autocast_the_experts_run_in_fp32_unless_they_follow_autocast(tiny_model, monkeypatch):
    """The hypothesis, on the CPU with the model as the GPU path holds it (fp32 weights, bf16
    autocast): transformers' grouped_mm casts the input to the weights' fp32, so the experts never compute in bf16.
    `experts_follow_autocast` makes them bf16, input and weights, with fp32 gradients for the fp32 weights; outside
    autocast it computes exactly what transformers' own backend does."""
    from transformers import AutoModelForCausalLM

    from ftlab.moe import AUTOCAST_EXPERTS, experts_follow_autocast

    calls = record_grouped_mm(monkeypatch)
    moe = upcycle(AutoModelForCausalLM.from_pretrained(tiny_model), 4, 2, noise=0.1)
    ids = torch.randint(0, moe.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = moe(input_ids=ids).logits
    assert moe.get_experts_implementation()[""] == "grouped_mm"
    calls.clear()
    experts_seen(moe, "cpu", ids)
    assert set(calls) == {(torch.float32, torch.float32, "cpu")}  # confirmed: fp32 under bf16 autocast

    assert experts_follow_autocast(moe) == AUTOCAST_EXPERTS
    moe.zero_grad()
    calls.clear()
    outputs, grads = experts_seen(moe, "cpu", ids)
    assert calls and set(calls) == {(torch.bfloat16, torch.bfloat16, "cpu")}  # the experts multiply in bf16
    assert outputs == {torch.bfloat16} and grads == {torch.float32}  # as an autocast nn.Linear: bf16 out, fp32 grads
    with torch.no_grad():
        assert torch.equal(moe(input_ids=ids).logits, plain)  # no autocast: transformers' backend, bit for bit
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.allclose(moe(input_ids=ids).logits.float(), plain, atol=0.1)  # bf16's rounding, no more


def test_lora_on_the_experts_follows_autocast_too(tiny_model, monkeypatch):
    """PEFT's LoRA on the 3-D expert weights (target_parameters) puts its update on the weights the backend reads:
    the experts still multiply in bf16, and the LoRA matrices get gradients."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftlab.moe import experts_follow_autocast

    calls = record_grouped_mm(monkeypatch)
    moe = upcycle(AutoModelForCausalLM.from_pretrained(tiny_model), 4, 2)
    experts_follow_autocast(moe)
    model = get_peft_model(moe, LoraConfig(r=4, lora_alpha=8, target_modules=[], init_lora_weights=False,
                                           target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]))
    ids = torch.randint(0, moe.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids).loss.backward()
    assert calls and set(calls) == {(torch.bfloat16, torch.bfloat16, "cpu")}
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


@pytest.mark.gpu
def test_on_cuda_the_experts_run_in_bf16_through_the_grouped_kernel(tiny_model, monkeypatch):
    """On CUDA under bf16 autocast: grouped_mm gets bf16 on the GPU, and it is torch's grouped kernel that runs. On
    sm90/sm100 (H100, B200) that is the fused CUTLASS kernel: the profile holds aten::_grouped_mm and no per-expert
    aten::mm (torch's fallback loop, which fp32 takes on every card and bf16 on the others)."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM

    from ftlab.moe import experts_follow_autocast

    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("bf16 autocast needs a card with bf16 arithmetic (compute capability 8.0+)")
    calls = record_grouped_mm(monkeypatch)
    moe = upcycle(AutoModelForCausalLM.from_pretrained(tiny_model), 4, 2, noise=0.1).cuda()
    experts_follow_autocast(moe)
    ids = torch.randint(0, moe.config.vocab_size, (4, 64), device="cuda")
    outputs, grads = experts_seen(moe, "cuda", ids)
    assert calls and set(calls) == {(torch.bfloat16, torch.bfloat16, "cuda")}
    assert outputs == {torch.bfloat16} and grads == {torch.float32}

    experts = moe.model.layers[0].mlp.experts
    hidden = torch.randn(256, moe.config.hidden_size, device="cuda")
    top_k_index = torch.randint(0, 4, (256, 2), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), profile(
            activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        experts(hidden, top_k_index, torch.full((256, 2), 0.5, device="cuda"))
        torch.cuda.synchronize()
    ops = {event.name for event in prof.events()}
    assert "aten::_grouped_mm" in ops, sorted(ops)
    if torch.cuda.get_device_capability()[0] in (9, 10):
        assert "aten::mm" not in ops, sorted(ops)  # the fused kernel, not the per-expert loop


@pytest.mark.gpu
def test_the_script_on_cuda_switches_the_experts_to_autocast(tiny_model, tmp_path):
    precision = ["--bf16", "true"] if torch.cuda.is_bf16_supported(including_emulation=False) else ["--fp16", "true"]
    metrics = train(tiny_model, tmp_path / "gpu", *precision, "--eval_before", "false", "--save_strategy", "no",
                    "--max_steps", "2")
    assert metrics["experts_implementation"] == "grouped_mm_autocast"
    assert all(math.isfinite(x) for x in metrics["train_losses"])
