"""ftlab.memory: AI Engineering's worked numbers (Chip Huyen, 2025, chapter 7), counts read from configs against real models and PEFT, ZeRO against
DeepSpeed's own estimators, the activation count against what autograd keeps, the table, the chart and the CLI."""

import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import memory
from ftlab.memory import Shape, describe, estimate_inference, estimate_training, format_table, parse_count

GB = 1e9
# Llama-style shapes at three sizes (about 1.5B, 6.7B and 70B parameters), for counts that need no download
SHAPES = {"1B": {"hidden": 2048, "layers": 16, "vocab": 128256, "intermediate": 8192, "heads": 32, "kv_heads": 8},
          "7B": {"hidden": 4096, "layers": 32, "vocab": 32000, "intermediate": 11008, "heads": 32},
          "70B": {"hidden": 8192, "layers": 80, "vocab": 128256, "intermediate": 28672, "heads": 64, "kv_heads": 8}}
# SmolLM2-135M's config, as in its config.json
SMOLLM2 = {"hidden_size": 576, "num_hidden_layers": 30, "vocab_size": 49152, "intermediate_size": 1536,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "tie_word_embeddings": True}


def tiny_config(**changes) -> LlamaConfig:
    """A 3-block Llama with grouped-query attention, small enough to build and run in a test."""
    sizes = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 300, "attn_implementation": "sdpa"}
    return LlamaConfig(**{**sizes, **changes})


def test_the_notes_worked_examples_come_out_exactly():
    """AI Engineering's numbers: 13B inference at 2 bytes, 13B and 1B-trainable Adam at 2 bytes, 7B 16-bit full."""
    assert round(estimate_inference("13B", precision="bf16") / GB, 2) == 31.2
    b = estimate_training("13B", precision="bf16")
    assert round((b.gradients + b.optimizer) / GB, 2) == 78.0
    b = estimate_training("13B", method="partial", precision="bf16", trainable="1B")
    assert round((b.gradients + b.optimizer) / GB, 2) == 6.0
    b = estimate_training("7B", precision="bf16")
    assert [round(x / GB, 2) for x in (b.weights, b.gradients, b.optimizer, b.model_states)] == [14, 14, 28, 56]
    assert round(estimate_inference("70B", precision="bf16", overhead=0) / GB, 2) == 140.0


@pytest.mark.parametrize("text, count", [("7B", 7e9), ("135M", 135e6), ("1.2e9", 1.2e9), ("70b", 70e9),
                                         ("2.5K", 2500), ("1,000", 1000), ("0.5T", 5e11), (42, 42)])
def test_parse_count(text, count):
    assert parse_count(text) == count


def test_parse_count_rejects_words():
    with pytest.raises(ValueError, match="not a parameter count"):
        parse_count("seven billion")


def test_precisions_and_optimizers_cost_what_the_docstring_says():
    """Bytes per trainable parameter as weight / gradient / optimizer states."""
    def per_param(**kwargs):
        b = estimate_training(1000, **kwargs)
        return b.weights / 1000, b.gradients / 1000, b.optimizer / 1000

    assert per_param(precision="fp32") == (4, 4, 8)
    assert per_param(precision="mixed") == (4, 4, 8)  # fp32 master weights under bf16 autocast
    assert per_param(precision="bf16") == (2, 2, 4)   # torch AdamW keeps its moments in the weights' dtype
    assert per_param(precision="mixed16") == (2, 2, 16)  # DeepSpeed: fp32 master + moments + fp32 gradient copy
    assert per_param(precision="bf16", optimizer="adamw_8bit")[2] == 2
    assert per_param(precision="bf16", optimizer="sgd")[2] == 0
    assert per_param(precision="bf16", optimizer="sgd_momentum")[2] == 2


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("head_dim", [None, 24])
def test_param_count_from_config_equals_the_real_model(tied, head_dim):
    """The formula (embedding, 7 linears and 2 norms per block, final norm, lm_head unless tied) counts exactly
    what transformers builds, and an nn.Module is counted directly to the same number."""
    config = tiny_config(tie_word_embeddings=tied, head_dim=head_dim)
    model = LlamaForCausalLM(config)
    assert describe(config).params == model.num_parameters()
    assert describe(model).params == model.num_parameters()
    assert estimate_training(model).trainable == model.num_parameters()


def test_a_non_llama_config_is_counted_on_the_meta_device():
    from transformers import Qwen2Config, Qwen2ForCausalLM  # q/k/v biases: the Llama formula does not apply

    config = Qwen2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300)
    assert describe(config).params == Qwen2ForCausalLM(config).num_parameters()


def test_a_model_folder_and_a_hub_id_are_read_through_resolve_model(tmp_path, monkeypatch):
    """A hub id goes through ftlab.models.resolve_model (offline: the embedded copy), then AutoConfig."""
    tiny_config().save_pretrained(tmp_path)
    asked = []
    monkeypatch.setattr("ftlab.models.resolve_model", lambda ref: asked.append(ref) or str(tmp_path))
    assert describe("HuggingFaceTB/SmolLM2-135M-Instruct").params == describe(tiny_config()).params
    assert asked == ["HuggingFaceTB/SmolLM2-135M-Instruct"]


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"], ["down_proj"]])
def test_lora_count_from_config_equals_peft(targets):
    """r x (in + out) per adapted layer, from the config alone, is what PEFT's get_peft_model trains."""
    from peft import LoraConfig, get_peft_model

    config = tiny_config()
    peft_model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=targets))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert estimate_training(config, method="lora", lora_r=8, lora_targets=targets).trainable == trainable
    live = estimate_training(peft_model, method="lora")  # a live PEFT model: its own trainable count
    assert (live.trainable, live.params) == (trainable, describe(config).params)


def test_qlora_weights_match_the_06_qlora_readme():
    """06_qlora/README.md: 106,168,320 quantized weights of SmolLM2-135M, 111 MB by formula (110 MB measured)."""
    config = LlamaConfig(**SMOLLM2)
    shape = describe(config).shape
    assert shape.layers * shape.block_linear_params() == 106_168_320
    base = estimate_training(config, method="qlora", precision="bf16", trainable=0)
    assert round(base.weights / 1e6) == 111
    lora = estimate_training(config, method="lora", precision="bf16")
    assert lora.weights - base.weights == pytest.approx(
        106_168_320 * (2 - memory.NF4_BITS / 8) + lora.trainable * 4)  # 16-bit -> NF4, plus the fp32 adapters


def test_zero_stages_partition_the_right_components():
    """Per GPU: stage 1 divides the optimizer states by G, stage 2 also the gradients, stage 3 also the weights,
    plus the largest layer (gathered whole, with its gradients). Activations are never divided."""
    def run(stage, gpus=4):
        return estimate_training("7B", precision="bf16", zero_stage=stage, gpus=gpus, **SHAPES["7B"])

    base, largest = run(0), Shape(**SHAPES["7B"]).largest_layer()
    assert (run(0, gpus=1).model_states, run(0).model_states) == (base.model_states, base.model_states)
    one, two, three = run(1), run(2), run(3)
    assert (one.weights, one.gradients, one.optimizer) == (base.weights, base.gradients, base.optimizer / 4)
    assert (two.weights, two.gradients, two.optimizer) == (base.weights, base.gradients / 4, base.optimizer / 4)
    assert three.weights == base.weights / 4 + 2 * largest
    assert three.gradients == base.gradients / 4 + 2 * largest
    assert {b.activations for b in (one, two, three)} == {base.activations}


@pytest.mark.parametrize("tied", [True, False])
def test_counts_agree_with_deepspeeds_model_to_params(tied):
    """DeepSpeed's ZeRO-3 estimator takes (total, largest layer) from a live model; ours come from the config."""
    pytest.importorskip("deepspeed", reason="DeepSpeed installs on Linux only")
    from deepspeed.runtime.zero.stage3 import model_to_params

    config = tiny_config(tie_word_embeddings=tied)
    shape = describe(config).shape
    assert model_to_params(LlamaForCausalLM(config)) == (shape.params(), shape.largest_layer())


@pytest.mark.parametrize("size", list(SHAPES))
@pytest.mark.parametrize("gpus", [1, 2, 8, 64])
def test_zero2_model_states_match_deepspeed(size, gpus):
    """precision="mixed16" is DeepSpeed's bf16/fp16 Adam: per GPU 2P (16-bit weights, whole) + 18P/G (16-bit
    gradients 2, fp32 gradient copy 4, fp32 master 4, fp32 moments 8). Equal to DeepSpeed's GPU figure without
    offload, up to its rounding down to whole bytes."""
    pytest.importorskip("deepspeed", reason="DeepSpeed installs on Linux only")
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    ours = estimate_training(size, precision="mixed16", zero_stage=2, gpus=gpus, **SHAPES[size])
    _, theirs = estimate_zero2_model_states_mem_needs(ours.params, num_gpus_per_node=gpus, cpu_offload=False)
    assert abs(ours.model_states - theirs) <= 1


@pytest.mark.parametrize("size", list(SHAPES))
@pytest.mark.parametrize("gpus", [1, 2, 8, 64])
def test_zero3_model_states_match_deepspeed(size, gpus):
    """ZeRO-3: 18P/G (16-bit weights 2, gradients reduced straight into fp32 partitions 4, master 4, moments 8)
    plus the largest layer's 16-bit weights and gradients, 4L, which DeepSpeed adds and we model. Given only a
    bare count, the largest layer is unknown: then we come out exactly 4L under DeepSpeed, and say so."""
    pytest.importorskip("deepspeed", reason="DeepSpeed installs on Linux only")
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    ours = estimate_training(size, precision="mixed16", zero_stage=3, gpus=gpus, **SHAPES[size])
    largest = Shape(**SHAPES[size]).largest_layer()
    _, theirs, _ = estimate_zero3_model_states_mem_needs(ours.params, largest, num_gpus_per_node=gpus,
                                                         cpu_offload=False, cpu_offload_params=False)
    assert abs(ours.model_states - theirs) <= 1
    bare = estimate_training(ours.params, precision="mixed16", zero_stage=3, gpus=gpus)
    assert abs(theirs - bare.model_states - 4 * largest) <= 1
    assert any("largest layer unknown" in note for note in bare.notes)


def test_activations_scale_with_batch_and_shrink_with_checkpointing():
    config = LlamaConfig(**SMOLLM2)

    def acts(**kwargs):
        return estimate_training(config, **{"precision": "bf16", "seq": 384, **kwargs}).activations

    assert acts(batch=16) == 2 * acts(batch=8)  # 16-bit weights: every term is per token
    assert acts(batch=3, seq=100) == 3 * acts(batch=1, seq=100)
    assert acts(gradient_checkpointing=True) < acts() / 2  # not less: the logits at the loss are not checkpointed
    # under checkpointing one more block keeps only its input: 2 s b h bytes in 16-bit, not a whole block
    assert acts(layers=31, gradient_checkpointing=True) - acts(gradient_checkpointing=True) == 2 * 384 * 8 * 576
    assert acts(layers=31) - acts() > 10 * 2 * 384 * 8 * 576
    # and on top of those inputs, one block recomputed in full and the output layer: a 1-block model's activations
    assert acts(gradient_checkpointing=True) - 30 * 2 * 384 * 8 * 576 == acts(layers=1)
    # under `mixed` autocast's 16-bit weight copies add a constant: 2 bytes per linear weight, whatever the batch
    mixed = [acts(batch=n, precision="mixed") for n in (1, 2, 3)]
    assert mixed[2] - mixed[1] == pytest.approx(mixed[1] - mixed[0])
    copies = 2 * (30 * describe(config).shape.block_linear_params() + 49152 * 576)
    assert mixed[0] - (mixed[1] - mixed[0]) == pytest.approx(copies)


def test_a_bare_count_gets_no_activations_but_says_why():
    b = estimate_training("7B", precision="bf16")
    assert b.activations == 0 and "no shape" in b.notes[0] and "no shape" in format_table(b)
    assert estimate_training("7B", precision="bf16", **SHAPES["7B"]).activations > 0


def saved_bytes(model, autocast: bool, padded: bool) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one forward pass, weights excluded."""
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 300, (2, 24)), torch.ones(2, 24, dtype=torch.long)
    mask[1, :5] = 0 if padded else 1
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
          torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)):
        model(input_ids=ids, attention_mask=mask, labels=ids)
    return sum(kept.values())


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "mixed"])
@pytest.mark.parametrize("padded", [True, False])
def test_activation_formula_counts_what_autograd_keeps(method, precision, padded):
    """Not a peak measurement: the tensors saved for backward (saved_tensors_hooks) on a tiny Llama, against the
    formula term by term. Left out by the formula, and so the tolerance: per-token scalars (norm statistics,
    log-sum-exp), RoPE tables, and in LoRA the first block, whose input needs no gradient."""
    config = tiny_config()
    model = LlamaForCausalLM(config).to(torch.bfloat16 if precision == "bf16" else torch.float32).train()
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    p = 4 if precision == "fp32" else 2
    shape = describe(config).shape
    formula = memory.activation_bytes(
        shape, 2, 24, compute=p, stream=2 if precision == "bf16" else 4, padded=padded, trains_base=method == "full",
        lora_targets=tuple(memory.SOURCE) * (method == "lora"), lora_r=4)
    formula -= 2 * 24 * 300 * (p + 4 * (p < 4))  # the logits and their fp32 copy live at the loss, not kept
    assert saved_bytes(model, autocast=precision != "fp32", padded=padded) == pytest.approx(formula, rel=0.04)


def test_format_table_names_units_and_components():
    table = format_table(estimate_training("7B", precision="bf16"))
    assert "|        GB |" in table and "| model states (w + g + o)   |     56.00 |" in table
    assert "|      0.80 |" in format_table(estimate_training("100M", precision="bf16"), unit="GB")
    assert "|    800.00 |" in format_table(estimate_training("100M", precision="bf16"))  # auto: MB below 1 GB
    assert "|      0.75 |" in format_table(estimate_training("100M", precision="bf16"), unit="GiB")


def test_plot_breakdown_writes_a_png(tmp_path):
    config = LlamaConfig(**SMOLLM2)
    scenarios = {m: estimate_training(config, method=m, precision="bf16") for m in ("full", "lora", "qlora")}
    path = memory.plot_breakdown(scenarios, tmp_path / "memory.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_cli_prints_the_56_gb_of_a_16_bit_7b_finetune():
    out = subprocess.run([sys.executable, "-m", "ftlab.memory", "7B", "--precision", "bf16"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    assert "| model states (w + g + o)   |     56.00 |" in out and "bf16 16.80 GB" in out


def test_cli_rejects_what_it_cannot_estimate():
    run = subprocess.run([sys.executable, "-m", "ftlab.memory", "7B", "--method", "partial"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 2 and "error: partial needs trainable=N" in run.stderr


@pytest.mark.parametrize("precision", ["fp32", "bf16", "mixed"])
def test_the_lora_rank_costs_exactly_what_the_formula_says(precision):
    """The rank-dependent terms (B's input, and under autocast the 16-bit copies of A and B) against autograd,
    to the byte. One known gap: block 0's input needs no gradient, so its q/k/v A matrices keep no copy there."""
    from peft import LoraConfig, get_peft_model

    config, p = tiny_config(), 4 if precision == "fp32" else 2
    kept, formula = {}, {}
    for r in (4, 12):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if precision == "bf16" else torch.float32).train()
        kept[r] = saved_bytes(get_peft_model(model, LoraConfig(r=r, target_modules="all-linear")),
                              autocast=precision != "fp32", padded=True)
        formula[r] = memory.activation_bytes(describe(config).shape, 2, 24, compute=p, trains_base=False,
                                             stream=2 if precision == "bf16" else 4,
                                             lora_targets=tuple(memory.SOURCE), lora_r=r)
    block0_gap = 0 if precision == "fp32" else 2 * (12 - 4) * 64 * 3
    assert kept[12] - kept[4] == formula[12] - formula[4] - block0_gap


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_a_trainer_is_read_for_its_own_budget(tiny_model, tmp_path, peft):
    """What `measure_training` prints before a CUDA run trains: the estimate from the trainer's live model and arguments
    (exact trainable count after PEFT), with a verdict for a 16 GB T4 and a 24 GB card."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from ftlab.memory import estimate_training, fit_report_for

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    if peft:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=3, use_cpu=True, bf16=False,
                             gradient_checkpointing=True, report_to=[])
    report = fit_report_for(Trainer(model=model, args=args))
    method = "lora" if peft else "full"
    expected = estimate_training(model, method=method, precision="fp32", batch=3, seq=512, gradient_checkpointing=True)
    assert f"{expected.total / 1e9:.1f} GB to train" in report and f"({method}, fp32, adamw, batch 3 x 512 tokens" in report
    assert "16 GB (T4): yes" in report and "24 GB: yes" in report


@pytest.mark.parametrize("dtype, bf16, zero, precision", [
    ("float32", False, None, "fp32"), ("auto", False, None, "fp32"), (None, True, None, "mixed"),
    ("float32", True, 2, "mixed16"), ("bfloat16", True, None, "bf16"), ("bfloat16", True, 3, "bf16")])
def test_a_runs_precision_follows_its_weights_autocast_and_deepspeed(dtype, bf16, zero, precision):
    """fp32 weights under autocast are mixed, under DeepSpeed's mixed precision mixed16; 16-bit weights are bf16."""
    from types import SimpleNamespace

    training_args = SimpleNamespace(bf16=bf16, fp16=False,
                                    deepspeed_plugin=None if zero is None else SimpleNamespace(zero_stage=zero))
    assert memory.training_precision(SimpleNamespace(dtype=dtype), training_args) == precision


def test_a_runs_budget_is_read_from_its_arguments(tmp_path):
    """01_full_finetuning's budget: precision, optimizer, batch, checkpointing, ZeRO stage and processes come from
    the run's arguments (a DeepSpeed plugin's stage, or 0 without one); method, seq and trainable as given."""
    from types import SimpleNamespace

    from transformers import TrainingArguments

    config, model_args = tiny_config(), SimpleNamespace(dtype="float32")
    launched = SimpleNamespace(bf16=True, fp16=False, deepspeed_plugin=SimpleNamespace(zero_stage="2"),
                               optim="adamw_bnb_8bit", per_device_train_batch_size=4, gradient_checkpointing=True,
                               world_size=2)
    b = memory.training_budget_for(config, launched, model_args, method="partial", seq=64, trainable=1000)
    assert b == estimate_training(config, method="partial", precision="mixed16", optimizer="adamw_8bit", batch=4,
                                  seq=64, gradient_checkpointing=True, trainable=1000, zero_stage=2, gpus=2)
    plain = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=3,
                              report_to=[])
    assert memory.training_budget_for(config, plain, model_args, seq=32) == estimate_training(
        config, precision="fp32", optimizer="adamw", batch=3, seq=32)


def live_weight_casts(model, **forward) -> int:
    """Bytes of autocast's 16-bit copies of `model`'s weights still alive when a bf16-autocast forward pass (with its
    loss) has finished, inside the autocast region: each cast is watched (a dispatch mode sees autocast's `_to_copy`
    of a parameter) through a weak reference to its storage, which is dead once nothing holds the copy."""
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode

    weights, casts = {p.untyped_storage().data_ptr() for p in model.parameters()}, []

    class WatchCasts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default and args[0].untyped_storage().data_ptr() in weights:
                casts.append((StorageWeakRef(out.untyped_storage()), out.untyped_storage().nbytes()))
            return out

    with WatchCasts(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**forward).loss
        alive = sum(nbytes for ref, nbytes in casts if not ref.expired())
    del loss
    return alive


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_autocasts_weight_copies_are_counted_as_they_stay(checkpointing, method):
    """Under `mixed` (fp32 weights, bf16 autocast) autocast caches its 16-bit copy of every weight that requires a
    gradient until the forward's autocast region ends, gradient checkpointing or not: at the loss every block's copy
    is alive, not one. A frozen weight's copy (LoRA's base) is not cached: without checkpointing the backward keeps
    it anyway, with checkpointing it is gone, made again for the one block the backward recomputes. The calculator's
    constant term (what does not grow with the batch) is those copies."""
    config = tiny_config(num_hidden_layers=6)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    ids = torch.randint(0, 300, (2, 24))
    measured = live_weight_casts(model, input_ids=ids, labels=ids)
    shape = describe(config).shape
    block, adapters = 2 * shape.block_linear_params(), 2 * 4 * sum(sum(shape.linears()[name]) for name in memory.SOURCE)
    lora, frozen_gone = method == "lora", method == "lora" and checkpointing
    # left out by the calculator, as in the LoRA rank test: block 0's input needs no gradient, so the frozen copies
    # of its q, k, v, needed only for that gradient, are not kept there
    block0_gap = 2 * 64 * (64 + 32 + 32) * (lora and not checkpointing)
    assert measured == 6 * (block * (not frozen_gone) + adapters * lora) - block0_gap + 2 * 300 * 64  # + lm_head's
    recomputed = block * frozen_gone  # the frozen base's copies: one block's at a time, in the backward

    def acts(batch):
        return memory.activation_bytes(shape, batch, 24, compute=2, stream=4, checkpointing=checkpointing,
                                       trains_base=method == "full", lora_r=4,
                                       lora_targets=tuple(memory.SOURCE) * (method == "lora"))

    assert 2 * acts(1) - acts(2) == measured + recomputed + block0_gap


def test_an_moes_expert_copies_are_not_cached():
    """Mixtral's experts (transformers 5) are 3-D weights run by transformers' experts kernel, outside autocast:
    autocast caches no copy of them, so under checkpointing only the attention's and the router's copies (and the
    lm_head's) are alive at the loss. The calculator's constant term adds one block's expert copies, made again
    when the backward recomputes that block; its MLP terms are the top-k experts' width (as 04's budget passes)."""
    from dataclasses import replace

    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=300, num_local_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    model = MixtralForCausalLM(config).train()
    model.gradient_checkpointing_enable()
    ids = torch.randint(0, 300, (2, 24))
    measured = live_weight_casts(model, input_ids=ids, labels=ids)
    shape = replace(describe(config).shape, intermediate=2 * 160)
    assert shape.experts == 4
    linears = shape.linears()
    attention = sum(a * b for name, (a, b) in linears.items() if memory.SOURCE[name] in ("attn", None))
    assert measured == 2 * (4 * (attention + 64 * 4) + 300 * 64)  # attention and router per block, the lm_head

    def acts(batch):
        return memory.activation_bytes(shape, batch, 24, compute=2, stream=4, checkpointing=True)

    assert 2 * acts(1) - acts(2) == measured + 2 * (shape.block_linear_params() - attention)


def test_packed_rows_get_grouped_query_attentions_saving():
    """Rows without padding (01's packed blocks) need no attention mask, so SDPA reads k and v at their own
    (grouped) width; a padded batch makes transformers repeat them to every head and keep a mask. The estimate
    for each kind of batch agrees with what autograd keeps, and the saving it counts is autograd's to the byte."""
    config = tiny_config()
    model = LlamaForCausalLM(config).to(torch.bfloat16).train()
    logits = 2 * 24 * 300 * (2 + 4)  # the logits and their fp32 copy live at the loss, not kept for backward
    estimate = {padded: estimate_training(config, precision="bf16", batch=2, seq=24, padded=padded).activations - logits
                for padded in (True, False)}
    kept = {padded: saved_bytes(model, autocast=False, padded=padded) for padded in (True, False)}
    assert kept[True] == pytest.approx(estimate[True], rel=0.04)
    assert kept[False] == pytest.approx(estimate[False], rel=0.04)
    assert kept[True] - kept[False] == estimate[True] - estimate[False] > 0


def table_rows(text: str) -> dict[str, str]:
    """A printed table's rows: component -> its value as printed."""
    return {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines()
            if line.startswith("| ")}


def test_the_cli_and_fit_report_take_packed_rows():
    shape = {"hidden": 576, "layers": 30, "vocab": 49152, "intermediate": 1536, "heads": 9, "kv_heads": 3}
    packed, padded = (estimate_training("135M", batch=8, seq=256, padded=kind, **shape) for kind in (False, True))
    assert packed.activations < padded.activations
    assert f"{packed.total / 1e9:.1f} GB to train" in memory.fit_report("135M", batch=8, seq=256, padded=False,
                                                                         **shape)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in shape.items()]
    out = subprocess.run([sys.executable, "-m", "ftlab.memory", "135M", *flags, "--batch", "8", "--seq", "256",
                          "--packed", "--unit", "GB"], capture_output=True, text=True, check=True, timeout=120).stdout
    assert table_rows(out)["activations"] == f"{packed.activations / 1e9:.2f}"


def fsdp_environment(config: str, **changes) -> dict[str, str]:
    """What `accelerate launch --config_file configs/accelerate/<config>` puts in each process's environment for
    FSDP (accelerate.utils.launch.prepare_multi_gpu_env): its fsdp_config keys, upper-cased, as FSDP_* variables."""
    import yaml
    from conftest import ROOT

    config = yaml.safe_load((ROOT / "configs/accelerate" / config).read_text(encoding="utf-8"))
    assert config["distributed_type"] == "FSDP"
    settings = {**config["fsdp_config"], **changes}
    return {"ACCELERATE_USE_FSDP": "true", **{key.upper(): str(value).lower() if isinstance(value, bool) else str(value)
                                              for key, value in settings.items()}}


@pytest.mark.parametrize("environment, stage", [
    (fsdp_environment("fsdp2.yaml"), 3),  # reshard_after_forward: gather a block's weights, free them after it
    (fsdp_environment("fsdp2.yaml", fsdp_reshard_after_forward=False), 2),  # weights stay whole from forward to backward
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "FULL_SHARD"}, 3),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}, 2),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "NO_SHARD"}, 0),
    ({}, 0)], ids=["fsdp2.yaml", "fsdp2-keep-weights", "fsdp1-full", "fsdp1-grad-op", "fsdp1-no-shard", "none"])
def test_a_runs_budget_reads_fsdps_sharding(monkeypatch, environment, stage):
    """Under `accelerate launch` with an FSDP config the budget per device is sharded like the ZeRO stage FSDP's
    strategy amounts to: full shard (FSDP2's reshard_after_forward) ~ ZeRO-3, shard grad op ~ ZeRO-2."""
    from types import SimpleNamespace

    for name in [name for name in __import__("os").environ if name.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config, model_args = tiny_config(), SimpleNamespace(dtype="float32")
    launched = SimpleNamespace(bf16=True, fp16=False, deepspeed_plugin=None, fsdp_plugin_args=None, optim="adamw_torch",
                               per_device_train_batch_size=4, gradient_checkpointing=False, world_size=2)
    b = memory.training_budget_for(config, launched, model_args, seq=64)
    assert b.inputs["zero_stage"] == stage
    assert b == estimate_training(config, precision="mixed", batch=4, seq=64, zero_stage=stage, gpus=2)


def test_fsdp_from_the_training_arguments_is_read_too(tmp_path):
    """`--fsdp` with an `fsdp_config` (no accelerate config): TrainingArguments' own plugin arguments."""
    from types import SimpleNamespace

    args = SimpleNamespace(deepspeed_plugin=None, fsdp_plugin_args={"fsdp_version": 2, "reshard_after_forward": False})
    assert memory.sharding_stage(args) == 2
    args.fsdp_plugin_args["reshard_after_forward"] = True
    assert memory.sharding_stage(args) == 3


def test_a_bare_count_prints_activations_as_not_estimated(tmp_path):
    """`python -m ftlab.memory 7B`: no shape, so no activations: the table says n/a for them and for the total, not
    0.00 and a total that reads as the whole; the chart says it on its bar."""
    out = subprocess.run([sys.executable, "-m", "ftlab.memory", "7B", "--precision", "bf16", "--plot",
                          str(tmp_path / "bare.png")], capture_output=True, text=True, check=True, timeout=120).stdout
    rows = table_rows(out)
    assert rows["activations"] == "n/a" and rows["total"] == "n/a" and rows["model states (w + g + o)"] == "56.00"
    assert memory.bar_label(estimate_training("7B", precision="bf16")) == "56.00\n+ activations n/a"
    shaped = estimate_training("7B", precision="bf16", **SHAPES["7B"])
    assert table_rows(format_table(shaped))["activations"] != "n/a"
    assert memory.bar_label(shaped) == f"{shaped.total / 1e9:.2f}"
