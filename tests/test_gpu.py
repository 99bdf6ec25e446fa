"""`gpu` tests that can fail for the right reasons: every training script on CUDA, checked where a CPU run cannot be.

Run with `make test-gpu` (`pytest -m gpu -n 0`); elsewhere each test is skipped with the reason (tests/conftest.py
hides CUDA from the default suite). Each run is test-sized (the tiny models of conftest.py, 2-4 steps), so the
file takes a few minutes on one H100. What each kind of test proves:

- **The parameters were on the GPU while training**: `metrics["parameters_trained_on"] == "cuda"` is the set of
  devices of the trainable parameters seen at every optimizer step (ftlab/resources.py's `RecordParameterDevices`).
  `memory_device == "cuda"` alone proved nothing: CUDA memory used to be read whenever a GPU was visible.
- **The same training as on the CPU**: the losses of the recorded 4-step runs of 02_sft and 01 (tests/test_sft.py,
  test_full_finetuning.py; also 01 under DeepSpeed) in fp32 on CUDA equal the CPU's within `FP32_TOLERANCE`, and
  02_sft's in the card's autocast (plain and with Liger) within `AUTOCAST_TOLERANCE` (why: at their definitions).
- **Scores computed on the GPU**: before and after, exact match on the eval sets (and the probe where it runs).
- **The kernels that ran**: Unsloth's attention/forward replacements are installed and are what runs; Liger
  replaces RMSNorm, RoPE and SwiGLU but TRL 1.15 keeps its own loss, not Liger's fused linear cross-entropy.
- **DeepSpeed ZeRO-2 on one GPU** through `accelerate launch` trains on CUDA with the recorded losses.

Not here, on purpose (each lesson's own test file owns them): 07/08/09 merging, quantizing, scoring and exporting on
the GPU (08's QAT is here only as a training script), 04's expert dtype on the GPU (test_moe.py), and the
before = after check with learning rate 0 (test_evaluation.py).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_script
from test_full_finetuning import EXPECTED_LOSSES as FULL_EXPECTED
from test_full_finetuning import train as full_train
from test_launchers import accelerate, launch, needs_deepspeed
from test_rlhf import QUICK, RL
from test_sft import EXPECTED_LOSSES as SFT_EXPECTED
from test_sft import train as sft_train

pytestmark = pytest.mark.gpu

# fp32 on CUDA against the CPU-recorded losses. torch leaves TF32 off for fp32 matmuls by default
# (torch.backends.cuda.matmul.allow_tf32 is False, torch.get_float32_matmul_precision() is "highest"), and
# transformers turns it on only for --tf32 true or --torch_compile true, which no config sets (asserted from the
# run's training_args.bin). So every matmul is IEEE fp32 and the GPU differs from the CPU only in the order of its
# sums: cuBLAS tiles, PyTorch's fused attention, and for SFT TRL's chunked log-prob kernel (cuBLAS tiles, then a
# Triton online logsumexp in fp32) where the CPU ran ftlab/trl_cpu.py's PyTorch path. That is ~1e-6 relative per
# operation, and three AdamW steps at lr 1e-3 do not amplify it past ~1e-4 (Adam's step lr * m / sqrt(v) is smooth
# in the gradient; only gradients near eps = 1e-8 could flip, and those move the loss by nothing measurable).
# The CPU suite already allows 2e-3 between CPUs (thread counts, vector paths; values recorded to 4 places), and
# the same 2e-3 holds here. Looser would test little: the tiny model starts at ln 512 = 6.238 whatever it is shown,
# and its 4 steps move the loss by 0.04-0.05 in all, so 1e-2 would be a fifth of everything the run changes.
FP32_TOLERANCE = 2e-3
# The card's autocast (bf16 from compute capability 8.0, fp16 below) against the same fp32 recording: what
# tests/test_sft.py's test_precision_follows_the_hardware_without_a_flag allows for bf16 on a CPU. 16-bit rounds
# every matmul's inputs (bf16 keeps 8 significant bits), it does not change what is learned.
AUTOCAST_TOLERANCE = 0.05


@pytest.fixture(scope="module", autouse=True)
def one_gpu():
    """Plain `python` refuses to start with several GPUs visible (ftlab.platforms.several_gpus_problem, and TRL
    refuses DataParallel): every script this file starts sees one, the first of those visible."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUDA_VISIBLE_DEVICES", "0" if visible is None else visible.split(",")[0].strip())
        yield


# ---- helpers ---------------------------------------------------------------------------------------------------
def tails(result: subprocess.CompletedProcess) -> str:
    return (f"exit {result.returncode}\n--- stdout (end) ---\n{result.stdout[-3000:]}\n"
            f"--- stderr (end) ---\n{result.stderr[-3000:]}")


def run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = run_script(script, *args, env=env)
    assert result.returncode == 0, tails(result)
    return result


def without(args: list[str], flag: str) -> list[str]:
    """`args` without `flag` and its value (QUICK's `--bf16 false`: the card's own precision instead)."""
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def trained_on_cuda(result: subprocess.CompletedProcess, out, steps: int) -> dict:
    """metrics.json of a run that must have trained on CUDA: the device line, the parameters' device at every
    optimizer step, the memory read, and `steps` finite losses."""
    assert "device: cuda" in result.stdout, tails(result)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["parameters_trained_on"] == "cuda", (metrics["parameters_trained_on"], tails(result))
    assert metrics["memory_device"] == "cuda", metrics["memory_device"]  # (the tiny model's peak rounds to 0.0 GiB)
    losses = metrics["train_losses"]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses), losses
    return metrics


def scored(metrics: dict, sets=("synthetic",), *, before: bool = True, n: int = 4) -> None:
    """Exact match (a number in [0, 1]) after training, and before it, on each of `sets`; `n` synthetic examples."""
    for when in ("before", "after") if before else ("after",):
        assert metrics[when] is not None, f"no {when!r} scores"
        for name in sets:
            assert 0 <= metrics[when][name]["exact_match"] <= 1, (when, name, metrics[when][name])
        assert metrics[when]["synthetic"]["n"] == n, metrics[when]["synthetic"]


def autocast_of_this_card() -> tuple[bool, bool]:
    """(bf16, fp16) a script should pick here without a flag: bf16 from compute capability 8.0 (A100, H100)."""
    bf16 = torch.cuda.get_device_capability() >= (8, 0)
    return bf16, not bf16


def training_args_of(out):
    return torch.load(out / "training_args.bin", weights_only=False)


def logged(out, key: str, checkpoint: str = "checkpoint-4") -> bool:
    """Whether the run logged `key` (its trainer_state.json at `checkpoint`)."""
    state = json.loads((out / checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return any(key in entry for entry in state["log_history"])


# ---- 01: full finetuning, fp32, against the recorded CPU losses ----------------------------------------------------
def test_full_finetuning_trains_on_cuda_with_the_cpu_recorded_losses(tiny_model, tmp_path):
    """01 with test_full_finetuning's own flags (fp32, 4 steps of 8 x 256 tokens): the plain `Trainer` on CUDA,
    its loss the model's own cross-entropy, equal to the CPU's within FP32_TOLERANCE."""
    out = tmp_path / "full"
    metrics, stdout = full_train(tiny_model, out)
    assert "device: cuda" in stdout, stdout[-3000:]
    assert metrics["parameters_trained_on"] == "cuda" and metrics["memory_device"] == "cuda", metrics
    assert metrics["bf16"] is False and training_args_of(out).fp16 is False
    assert metrics["train_losses"] == pytest.approx(FULL_EXPECTED, abs=FP32_TOLERANCE), (
        metrics["train_losses"], FULL_EXPECTED)
    scored(metrics, ("synthetic", "handwritten"))
    assert math.isfinite(metrics["perplexity_before"]) and math.isfinite(metrics["perplexity_after"])


# ---- 02: SFT in the card's autocast (also the start model of 03 and 08 below) and in fp32 ---------------------------
@pytest.fixture(scope="module")
def sft_on_gpu(tiny_model, tmp_path_factory):
    """02_sft with test_sft's flags and no precision flag: the card's autocast. Its folder is the finetuned start
    model that DPO/KTO/ORPO, the reward model, GRPO/RLOO and QAT start from (a later stage gets a folder)."""
    out = tmp_path_factory.mktemp("gpu-sft") / "run"
    return out, sft_train(tiny_model, out, precision=())


def test_sft_trains_on_cuda_in_the_cards_autocast(sft_on_gpu):
    out, metrics = sft_on_gpu
    assert metrics["parameters_trained_on"] == "cuda" and metrics["memory_device"] == "cuda", metrics
    args = training_args_of(out)
    assert not args.use_cpu and (args.bf16, args.fp16) == autocast_of_this_card(), (args.bf16, args.fp16)
    losses = metrics["train_losses"]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), losses
    assert losses == pytest.approx(SFT_EXPECTED, abs=AUTOCAST_TOLERANCE), (losses, SFT_EXPECTED)
    scored(metrics, ("synthetic", "handwritten"))
    assert metrics["before"]["probe"]["n"] == metrics["after"]["probe"]["n"] > 0
    assert logged(out, "entropy"), "no entropy logged: TRL's fused loss (the only path that logs it) did not run"


def test_sft_in_fp32_on_cuda_matches_the_cpu_recorded_losses(tiny_model, tmp_path):
    """test_sft's recorded run (fp32, 4 steps, lr 1e-3, batch 8, seed 42) on CUDA: TRL's chunked log-prob kernel
    computes the loss here, ftlab/trl_cpu.py's PyTorch path did on the CPU; the losses agree within FP32_TOLERANCE."""
    out = tmp_path / "fp32"
    metrics = sft_train(tiny_model, out, "--eval_before", "false")  # test_sft's default precision: --bf16 false
    assert metrics["parameters_trained_on"] == "cuda", metrics["parameters_trained_on"]
    args = training_args_of(out)
    assert (args.bf16, args.fp16) == (False, False), (args.bf16, args.fp16)
    assert args.tf32 is None and not args.torch_compile, "TF32 would round fp32 matmuls to 10 mantissa bits"
    assert os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") != "1", "this environment forces TF32 on"
    assert metrics["train_losses"] == pytest.approx(SFT_EXPECTED, abs=FP32_TOLERANCE), (
        metrics["train_losses"], SFT_EXPECTED)
    assert logged(out, "entropy"), "no entropy logged: TRL's fused loss (the only path that logs it) did not run"


# ---- 02 with Liger: which kernels it replaces under TRL 1.15 ---------------------------------------------------------
# A script run with spies: it counts calls of the functions named in SPIES (and the devices of their tensors) and,
# right after `trainer.train()` returns, writes what it saw to $SPY_REPORT. The script itself runs unchanged (runpy).
SPY_RUNNER = """
import json, os, runpy, sys
import torch
import transformers

CALLS, DEVICES = {}, {}


def counted(name, fn):
    CALLS.setdefault(name, 0)
    DEVICES.setdefault(name, set())

    def spy(*args, **kwargs):
        CALLS[name] += 1
        DEVICES[name].update(a.device.type for a in args if isinstance(a, torch.Tensor))
        return fn(*args, **kwargs)
    return spy


%(spies)s

_train = transformers.Trainer.train


def train(trainer, *args, **kwargs):
    start = dict(CALLS)
    result = _train(trainer, *args, **kwargs)
    model = trainer.model
    report = {"calls_during_training": {k: CALLS[k] - start[k] for k in CALLS},
              "devices": {k: sorted(v) for k, v in DEVICES.items()},
              "module_names": sorted({m._get_name() for m in model.modules()}),
              "use_liger_kernel": trainer.args.use_liger_kernel,
              "liger_kernel_config": trainer.args.liger_kernel_config}
    with open(os.environ["SPY_REPORT"], "w") as f:
        json.dump(report, f, indent=1)
    return result


transformers.Trainer.train = train  # every TRL trainer inherits it; the script calls trainer.train() after this
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# What `--use_liger_kernel true` can change in a Llama (liger_kernel 0.8.5, transformers/monkey_patch.py,
# apply_liger_kernel_to_llama): modeling_llama.apply_rotary_pos_emb = liger_rotary_pos_emb (a global the attention
# looks up at each call); every RMSNorm's and MLP's forward bound to LigerRMSNorm.forward / LigerSwiGLUMLP.forward
# (read from the class when it patches, so a spy put on the class is what gets bound); and, if
# fused_linear_cross_entropy, model.forward = MethodType(llama_lce_forward, model). TRL's own loss kernel:
# trl.kernels.ChunkedLogProbFunction, which ftlab/trl_cpu.py calls on CUDA.
LIGER_SPIES = """
import liger_kernel.transformers.monkey_patch as liger
from liger_kernel.transformers.rms_norm import LigerRMSNorm
from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
from trl.kernels import ChunkedLogProbFunction

LigerRMSNorm.forward = counted("liger_rms_norm", LigerRMSNorm.forward)
LigerSwiGLUMLP.forward = counted("liger_swiglu", LigerSwiGLUMLP.forward)
liger.liger_rotary_pos_emb = counted("liger_rope", liger.liger_rotary_pos_emb)
liger.llama_lce_forward = counted("liger_fused_linear_cross_entropy", liger.llama_lce_forward)
ChunkedLogProbFunction.apply = counted("trl_chunked_log_probs", ChunkedLogProbFunction.apply)
"""


def run_with_spies(spies: str, script: str, *args: str, report, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python script args` as run_script runs it, with SPY_RUNNER's spies; the report goes to `report`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "SPY_REPORT": str(report)}
    return subprocess.run([sys.executable, "-c", SPY_RUNNER % {"spies": spies}, script, *args], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=timeout, check=False)


def test_liger_replaces_norm_rope_and_swiglu_but_trl_keeps_its_own_loss(tiny_model, tmp_path, monkeypatch):
    """`--use_liger_kernel true` in SFT (TRL 1.15): Liger's RMSNorm, RoPE and SwiGLU kernels run in training, on
    CUDA; Liger's fused linear cross-entropy never does, TRL's chunked log-prob kernel computes the loss.

    Why: trl/trainer/sft_trainer.py:1118-1133 (TRL 1.15.0) sets `liger_kernel_config["fused_linear_cross_entropy"]
    = False` ("Liger's fused linear cross-entropy replaces `model.forward` when training starts, which would drop the
    fused LM head, so only its layer kernels are applied"; asking for it is a ValueError), then adds TRL's fused LM
    head (sft_trainer.py:1135-1140). transformers' Trainer.train applies Liger with that config
    (transformers/trainer.py:1452-1453 -> integrations/liger.py -> _apply_liger_kernel_to_instance). So Liger's
    speed-up in SFT is RMSNorm/RoPE/SwiGLU only; its memory saving on the loss comes from TRL's kernel instead.
    The run is test_sft's (its `train` and flags), in the card's autocast; the losses stay within AUTOCAST_TOLERANCE.
    """
    import test_sft

    report = tmp_path / "spies.json"
    monkeypatch.setattr(test_sft, "run_script", lambda script, *args, **kwargs: run_with_spies(
        LIGER_SPIES, script, *args, report=report))
    out = tmp_path / "liger"
    metrics = test_sft.train(tiny_model, out, "--use_liger_kernel", "true", "--eval_before", "false", precision=())
    seen = json.loads(report.read_text(encoding="utf-8"))
    calls, devices = seen["calls_during_training"], seen["devices"]
    assert seen["use_liger_kernel"] is True
    assert (seen["liger_kernel_config"] or {}).get("fused_linear_cross_entropy") is False, seen
    for kernel in ("liger_rms_norm", "liger_rope", "liger_swiglu"):
        assert calls[kernel] > 0, f"{kernel} never ran while training: {seen}"
        assert devices[kernel] == ["cuda"], (kernel, devices[kernel])
    assert calls["liger_fused_linear_cross_entropy"] == 0, f"Liger's fused loss ran in SFT: {seen}"
    assert calls["trl_chunked_log_probs"] > 0 and devices["trl_chunked_log_probs"] == ["cuda"], seen
    names = set(seen["module_names"])
    assert {"LigerRMSNorm", "LigerSwiGLUMLP"} <= names and not names & {"LlamaRMSNorm", "LlamaMLP"}, sorted(names)
    assert metrics["parameters_trained_on"] == "cuda", metrics["parameters_trained_on"]
    assert metrics["train_losses"] == pytest.approx(SFT_EXPECTED, abs=AUTOCAST_TOLERANCE), metrics["train_losses"]


# ---- 03: reward model, DPO/KTO/ORPO, GRPO/RLOO, from the SFT run -----------------------------------------------------
GPU_QUICK = without(QUICK, "--bf16")  # test_rlhf's test-sized flags, in the card's own precision


@pytest.fixture(scope="module")
def reward_on_gpu(sft_on_gpu, tmp_path_factory):
    start, _ = sft_on_gpu
    out = tmp_path_factory.mktemp("gpu-reward") / "run"
    result = run("03_rlhf/train_reward.py", "--config", "03_rlhf/reward.yaml", "--model_name_or_path", str(start),
                 "--output_dir", str(out), *GPU_QUICK)
    return out, result


def test_reward_model_trains_on_cuda(reward_on_gpu):
    out, result = reward_on_gpu
    metrics = trained_on_cuda(result, out, steps=4)
    for when in ("before", "after"):
        accuracy = metrics[f"pairwise_accuracy_{when}"]["all"]
        assert 0 <= accuracy <= 1, (when, accuracy)
    assert all(math.isfinite(e["chosen_reward"]) and math.isfinite(e["rejected_reward"]) for e in metrics["examples"])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForSequenceClassification"]


@pytest.mark.parametrize("method, first_loss", [("dpo", math.log(2)), ("kto", 0.5), ("orpo", None)],
                         ids=["dpo", "kto", "orpo"])
def test_preference_methods_train_on_cuda(method, first_loss, sft_on_gpu, tmp_path):
    """DPO, KTO and ORPO from the SFT folder. DPO's and KTO's first loss is fixed by the maths: the policy starts
    equal to its reference, so ln 2 and 0.5 (as recorded on the CPU); 0.01 leaves room for the reference running in
    another rounding than the policy, and catches a reference that is not the starting model."""
    start, _ = sft_on_gpu
    out = tmp_path / method
    result = run("03_rlhf/train_dpo.py", "--config", f"03_rlhf/{method}.yaml", "--model_name_or_path", str(start),
                 "--output_dir", str(out), *GPU_QUICK)
    metrics = trained_on_cuda(result, out, steps=4)
    assert metrics["method"] == method
    if first_loss is not None:
        assert metrics["train_losses"][0] == pytest.approx(first_loss, abs=0.01), metrics["train_losses"]
    assert math.isfinite(metrics["preference_eval"]["eval_loss"]), metrics["preference_eval"]
    scored(metrics)


def test_grpo_with_the_verifiable_reward_trains_on_cuda(sft_on_gpu, tmp_path):
    start, _ = sft_on_gpu
    out = tmp_path / "grpo"
    result = run("03_rlhf/train_rl.py", "--config", "03_rlhf/rl.yaml", "--model_name_or_path", str(start),
                 "--output_dir", str(out), *GPU_QUICK, *RL, "--rewards", "json")
    metrics = trained_on_cuda(result, out, steps=4)
    steps = metrics["per_step"]
    assert len(steps["kl"]) == 4 and all(math.isfinite(k) for k in steps["kl"]), steps
    assert all(0 <= r <= 1 for r in steps["rewards/verifiable_reward/mean"]), steps
    assert all(0 < n <= 12 for n in steps["completions/mean_length"]), steps
    scored(metrics)


def test_rloo_with_the_gpu_trained_reward_model_trains_on_cuda(sft_on_gpu, reward_on_gpu, tmp_path):
    """rloo.yaml as written (reward model + verifiable reward, weighted 0.2 / 1.0), the reward model being the one
    train_reward.py trained on this GPU above."""
    (start, _), (reward_dir, _) = sft_on_gpu, reward_on_gpu
    out = tmp_path / "rloo"
    result = run("03_rlhf/train_rl.py", "--config", "03_rlhf/rloo.yaml", "--model_name_or_path", str(start),
                 "--output_dir", str(out), *GPU_QUICK, *RL, "--reward_model", str(reward_dir))
    metrics = trained_on_cuda(result, out, steps=4)
    steps = metrics["per_step"]
    assert metrics["method"] == "rloo" and len(steps["kl"]) == 4, steps
    assert len(steps["reward"]) == 4 and all(math.isfinite(r) for r in steps["reward"]), steps
    assert len(steps[f"rewards/{reward_dir.name}/mean"]) == 4, sorted(steps)
    scored(metrics)


# ---- 04, 05, 06, 08: the other training scripts ----------------------------------------------------------------------
def test_moe_trains_on_cuda(tiny_model, tmp_path):
    """04 upcycles on the CPU, then moves the MoE to the GPU and trains it there (in the card's autocast)."""
    out = tmp_path / "moe"
    result = run("04_moe/train.py", "--config", "04_moe/config.yaml", "--model_name_or_path", str(tiny_model),
                 "--output_dir", str(out), "--max_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
                 "--save_strategy", "no", "--eval_samples", "4", "--max_new_tokens", "8", "--load_samples", "8",
                 "--eval_before", "true", "--handwritten_file", "none", "--probe_file", "none")
    metrics = trained_on_cuda(result, out, steps=4)
    assert len(metrics["aux_losses"]) == 4 and all(math.isfinite(a) for a in metrics["aux_losses"]), metrics
    assert metrics["num_experts"] == 4 and metrics["bf16"] == autocast_of_this_card()[0]
    scored(metrics)


def test_lora_trains_on_cuda(tiny_model, tmp_path):
    """05 with its config's bf16 weights (float16 on a card without bf16: start-up converts it) and autocast."""
    out = tmp_path / "lora"
    result = run("05_peft_lora/train.py", "--config", "05_peft_lora/config.yaml", "--model_name_or_path",
                 str(tiny_model), "--output_dir", str(out), "--max_steps", "4", "--learning_rate", "1e-2",
                 "--lora_r", "4", "--lora_alpha", "8", "--logging_steps", "1", "--eval_strategy", "no",
                 "--save_strategy", "no", "--eval_samples", "4", "--max_new_tokens", "8", "--handwritten_file",
                 "none", "--probe_file", "none")
    metrics = trained_on_cuda(result, out, steps=4)
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"], metrics
    assert (out / "adapter_model.safetensors").is_file() and (out / "merged" / "model.safetensors").is_file()
    scored(metrics)


def test_qlora_trains_on_cuda(tiny_model_64, tmp_path):
    """06 on a 4-bit base quantized on the GPU: the LoRA parameters train there, with the paged 8-bit AdamW."""
    out = tmp_path / "qlora"
    result = run("06_qlora/train.py", "--config", "06_qlora/config.yaml", "--model_name_or_path", str(tiny_model_64),
                 "--output_dir", str(out), "--max_steps", "4", "--learning_rate", "1e-2", "--lora_r", "4",
                 "--lora_alpha", "8", "--logging_steps", "1", "--save_strategy", "no", "--eval_samples", "4",
                 "--max_new_tokens", "8", "--handwritten_file", "none", "--probe_file", "none")
    metrics = trained_on_cuda(result, out, steps=4)
    assert metrics["optimizer"] == "paged_adamw_8bit", metrics["optimizer"]
    assert 0 < metrics["base_4bit_mb"] < metrics["base_16bit_mb"], metrics
    scored(metrics)


def test_qat_trains_on_cuda(sft_on_gpu, tmp_path):
    """08's QAT from the finetuned SFT folder: the start model after PTQ, plain finetuning + PTQ, QAT + convert, all
    scored; the QAT run's parameters (fake-quantized linears included) are on the GPU at every step."""
    start, _ = sft_on_gpu
    out = tmp_path / "qat"
    result = run("08_quantization/train_qat.py", "--config", "08_quantization/train_qat.yaml", "--model_name_or_path",
                 str(start), "--output_dir", str(out), "--max_steps", "2", "--learning_rate", "1e-3",
                 "--logging_steps", "1", "--eval_samples", "4", "--handwritten_file", "none", "--max_new_tokens", "8",
                 "--report_to", "none", "--eval_before", "true")
    metrics = trained_on_cuda(result, out, steps=2)
    scored(metrics)  # before: the start model + PTQ; after: QAT + convert
    assert metrics["ptq_after_plain_finetuning"]["synthetic"]["n"] == 4 and metrics["plain_train_seconds"] > 0
    assert metrics["bf16"] == autocast_of_this_card()[0]
    assert "| QAT + convert |" in result.stdout, tails(result)


# ---- Unsloth: its kernels are what runs, and scoring works with its caches -------------------------------------------
# Loads the tiny model as 05_peft_lora/train_unsloth.py does (Unsloth first: it patches transformers as it loads), then
# runs one forward with a counter on `fast_rope_embedding`, the RoPE kernel entry that only Unsloth's attention calls
# (a global of unsloth.models.llama, looked up at each call). Prints one RESULT line of JSON.
UNSLOTH_PROBE = """
import unsloth  # noqa: F401
import inspect, json, sys
import torch
import unsloth.models.llama as fast_llama
from transformers.models.llama import modeling_llama
from unsloth import FastLanguageModel
from ftlab.platforms import choose, detect

model, tokenizer = FastLanguageModel.from_pretrained(model_name=sys.argv[1], max_seq_length=256, load_in_4bit=False,
                                                     dtype=getattr(torch, choose(detect()).dtype))
decoder = model.get_decoder()
rope, rope_calls = fast_llama.fast_rope_embedding, []


def counted_rope(*args, **kwargs):
    rope_calls.append([a.device.type for a in args if isinstance(a, torch.Tensor)])
    return rope(*args, **kwargs)


fast_llama.fast_rope_embedding = counted_rope
ids = tokenizer(["Hi, I'm Ana Ruiz from Porto, 34, ana.ruiz@mail.pt."], return_tensors="pt").to(model.device)
with torch.no_grad():
    logits = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
fast_llama.fast_rope_embedding = rope


def where(fn):
    fn = inspect.unwrap(fn)  # (the gate Unsloth puts around each patched method carries the fast one's name)
    return f"{fn.__module__}.{fn.__qualname__}"


attention_class = type(decoder.layers[0].self_attn)
print("RESULT " + json.dumps({
    "device": model.device.type, "layers": len(decoder.layers), "finite": bool(torch.isfinite(logits.float()).all()),
    "rope_calls": len(rope_calls), "rope_devices": sorted({d for call in rope_calls for d in call}),
    "fast_path_marked": all(getattr(m, "_unsloth_fast_path", False) for m in [  # the modules whose classes it patched
        model, decoder, *decoder.layers, *(layer.self_attn for layer in decoder.layers)]),
    "attention_forward": where(attention_class.forward),
    "decoder_layer_forward": where(type(decoder.layers[0]).forward),
    "model_forward": where(type(decoder).forward), "causal_lm_forward": where(type(model).forward),
    "llama_attention_forward": where(modeling_llama.LlamaAttention.forward),
    "llama_for_causal_lm_forward": where(modeling_llama.LlamaForCausalLM.forward)}))
"""


def unsloth_env(tmp_path) -> dict:
    """Unsloth writes the trainer code it compiles to ./unsloth_compiled_cache: into the test's folder instead."""
    return {"UNSLOTH_COMPILE_LOCATION": str(tmp_path / "unsloth_compiled_cache")}


@pytest.fixture
def unsloth_installed():
    from ftlab.platforms import installed

    if not installed("unsloth"):
        pytest.skip("Unsloth installs on Linux only (it needs Triton)")


def test_unsloth_replaces_llama_attention_and_forward_on_cuda(unsloth_installed, tiny_model, tmp_path):
    """After `import unsloth` and FastLanguageModel.from_pretrained on CUDA, Llama runs Unsloth's forwards.

    unsloth/models/llama.py (2026.10.9): from_pretrained, for model_type "llama", calls FastLlamaModel.pre_patch, which
    sets `LlamaAttention.forward = LlamaAttention_fast_forward`, `LlamaDecoderLayer.forward = ..._fast_forward`,
    `LlamaModel.forward = LlamaModel_fast_forward` and `LlamaForCausalLM.forward = CausalLM_fast_forward(...)` (its
    inner `_CausalLM_fast_forward`). Then `_gate_pre_patch_to_unsloth_models` wraps each in a gate that runs the fast
    method only on modules marked `_unsloth_fast_path` (`mark_unsloth_fast_path(model)`), else transformers' own: so
    the names alone do not prove it. Checked: the names on the loaded model's own classes (under the gate), the mark
    on the model, its decoder, layers and attentions, and that one forward called `fast_rope_embedding` (Unsloth's
    Triton RoPE, called only from LlamaAttention_fast_forward) once per layer, on CUDA tensors."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **unsloth_env(tmp_path)}
    result = subprocess.run([sys.executable, "-c", UNSLOTH_PROBE, str(tiny_model)], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=600, check=False)
    assert result.returncode == 0, tails(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, tails(result)
    seen = json.loads(lines[-1].removeprefix("RESULT "))
    assert seen["device"] == "cuda" and seen["finite"], seen
    for key, name in [("attention_forward", "LlamaAttention_fast_forward"),
                      ("llama_attention_forward", "LlamaAttention_fast_forward"),
                      ("decoder_layer_forward", "LlamaDecoderLayer_fast_forward"),
                      ("model_forward", "LlamaModel_fast_forward"),
                      ("causal_lm_forward", "CausalLM_fast_forward"),
                      ("llama_for_causal_lm_forward", "CausalLM_fast_forward")]:
        assert seen[key].startswith("unsloth.") and name in seen[key], (
            f"{key} is {seen[key]!r}, not Unsloth's {name}: its patched kernels are not what runs on CUDA")
    assert seen["fast_path_marked"], f"the model is not marked for Unsloth's fast path: {seen}"
    assert seen["rope_calls"] == seen["layers"] and seen["rope_devices"] == ["cuda"], (
        f"Unsloth's attention (its RoPE kernel) did not run once per layer on CUDA: {seen}")
    assert "no GPU found" not in result.stdout + result.stderr, tails(result)


def test_unsloth_lora_trains_and_scores_before_and_after_on_cuda(unsloth_installed, tiny_model, tmp_path):
    """05_peft_lora/train_unsloth.py on CUDA: Unsloth's patched Llama trains the adapter there, and ftlab's scoring
    works on it before and after (on CUDA Unsloth's model can return legacy tuple caches, which ftlab/evaluation.py's
    generate must not treat as a Cache): every eval set and the probe, and every answer written."""
    out = tmp_path / "unsloth"
    result = run("05_peft_lora/train_unsloth.py", "--config", "05_peft_lora/config.yaml", "--model_name_or_path",
                 str(tiny_model), "--output_dir", str(out), "--max_steps", "4", "--learning_rate", "1e-2",
                 "--lora_r", "4", "--lora_alpha", "8", "--logging_steps", "1", "--eval_strategy", "no",
                 "--save_strategy", "no", "--eval_samples", "4", "--max_new_tokens", "8", env=unsloth_env(tmp_path))
    assert "no GPU found" not in result.stdout + result.stderr, tails(result)
    metrics = trained_on_cuda(result, out, steps=4)
    scored(metrics, ("synthetic", "handwritten"))
    assert metrics["before"]["probe"]["n"] == metrics["after"]["probe"]["n"] > 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and all(isinstance(r["before"], str) and isinstance(r["after"], str) for r in rows), rows[:2]
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"], metrics


# ---- DeepSpeed ZeRO-2 on one GPU -------------------------------------------------------------------------------------
@needs_deepspeed
def test_deepspeed_zero2_trains_on_one_gpu_with_the_recorded_losses(tiny_model, tmp_path):
    """configs/accelerate/deepspeed_zero2.yaml with --num_processes 1 (test_launchers' command and flags, fp32):
    one GPU, ZeRO-2, 8 rows a step as test_full_finetuning's recorded run, so its losses within FP32_TOLERANCE."""
    metrics = launch([*accelerate("deepspeed_zero2.yaml"), "--num_processes", "1"], tiny_model, tmp_path / "run",
                     "--per_device_train_batch_size", "8")
    assert metrics["world_size"] == 1 and metrics["zero_stage"] == 2, metrics
    assert metrics["parameters_trained_on"] == "cuda" and metrics["memory_device"] == "cuda", metrics
    assert metrics["train_losses"] == pytest.approx(FULL_EXPECTED, abs=FP32_TOLERANCE), (
        metrics["train_losses"], FULL_EXPECTED)
    scored(metrics, before=False, n=2)  # (test_launchers' flags: no score before, 2 synthetic examples)
