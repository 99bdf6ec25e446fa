"""08_quantization: the number-format arithmetic against known answers and torch's own casts, every PTQ method
and the QAT path on the tiny models (quantized, saved, loaded back, generating, scored), sizes on disk, errors.

bitsandbytes 4-bit needs layers at least one 64-weight block wide, so the scripts run on the width-64 tiny model.
"""

import json
import math

import pytest
import torch
from conftest import run_script

from ftlab.numerics import FORMATS, IntFormat, Tally, round_float, round_int, round_to

ALL_METHODS = ["fp32", "bf16", "bnb_int8", "bnb_nf4", "torchao_int8", "torchao_int4", "torchao_int8_dynamic",
               "torchao_int8_dynamic_int4"]
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


# ---- Formats: known answers --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_rounding_equals_torchs_cast_and_range_equals_finfo(name):
    """Our rounding (ties to even, subnormals, overflow; e4m3 saturating at 448) is torch's cast, value for value,
    over 30 orders of magnitude and the edge cases; our range and precision are torch.finfo's."""
    torch.manual_seed(0)
    edges = [65504.0, 65519.0, 65520.0, 1e5, 5.9e-8, 2.98e-8, 3e-8, 6.1e-5, 448.0, 463.0, 464.0, 465.0, 57344.0,
             61440.0, 1e-40, 0.0, -0.0, 1 + 2**-8, 1 + 3 * 2**-9]
    x = torch.cat([torch.randn(20_000) * torch.logspace(-30, 10, 20_000), torch.tensor(edges)])
    x = torch.cat([x, -x])
    assert torch.equal(round_float(x, FORMATS[name]), x.to(TORCH_DTYPES[name]).float())
    assert torch.equal(round_to(x, FORMATS[name]), x.to(TORCH_DTYPES[name]).float())  # (which is what it uses)
    fmt, finfo = FORMATS[name], torch.finfo(TORCH_DTYPES[name])
    assert (fmt.bits, fmt.largest, fmt.smallest_normal, fmt.relative_step) == (
        finfo.bits, finfo.max, finfo.smallest_normal, finfo.eps)


def test_known_values_overflow_underflow_and_rounding():
    fp16, bf16, e4m3, e5m2, tf32 = (FORMATS[n] for n in ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "tf32"))
    x = torch.tensor([65504.0, 65520.0, 70000.0, 1e-8, 300.0])
    assert round_float(x, fp16).tolist() == [65504.0, math.inf, math.inf, 0.0, 300.0]  # 65,520 rounds up to inf
    assert round_float(x, bf16).tolist() == [65536.0, 65536.0, 70144.0, pytest.approx(1e-8, rel=4e-3), 300.0]
    assert round_float(torch.tensor([500.0, 1e5]), e4m3).tolist() == [448.0, 448.0]  # no infinity: saturates
    assert round_float(torch.tensor([500.0, 1e5]), e5m2).tolist() == [512.0, math.inf]
    # TF32 keeps 10 mantissa bits: 1 + 2^-11 is a tie and goes to the even neighbour, 1.
    assert round_float(torch.tensor([1 + 2**-11, 1 + 3 * 2**-12, 1 + 2**-10]), tf32).tolist() == [1.0, 1 + 2**-10, 1 + 2**-10]
    fp32 = FORMATS["fp32"]  # TF32: fp32's exponent, so fp32's range (its largest value has fewer mantissa bits set)
    assert tf32.bits == 19 and tf32.smallest_normal == fp32.smallest_normal
    assert tf32.largest == pytest.approx(fp32.largest, rel=1e-3)
    # fp16's smallest subnormal is 2^-24; half of it rounds to zero (a tie, to even), a bit more rounds up
    assert fp16.smallest_subnormal == 2**-24
    assert round_float(torch.tensor([2**-25, 2**-25 * 1.01]), fp16).tolist() == [0.0, 2**-24]
    scaled = round_float(torch.tensor([1e-4, 2e-4, 1e-3]), FORMATS["fp8_e4m3_scaled"])  # 1e-3 is mapped to 448
    assert scaled[2].item() == pytest.approx(1e-3) and scaled[0].item() == pytest.approx(1e-4, rel=0.07)


def test_integer_levels_and_why_groups_help():
    row = torch.tensor([[1.0, 0.5, -1.0, 0.24]])
    # torchao's scale: the largest |value| / 127.5 (int4: / 7.5); the largest itself comes back as 127 (7) steps
    assert round_int(row, FORMATS["int8"])[0].tolist() == pytest.approx([127 / 127.5, 64 / 127.5, -127 / 127.5,
                                                                         31 / 127.5])  # 63.75 -> 64, 30.6 -> 31
    assert round_int(row, IntFormat("int4", 4))[0].tolist() == pytest.approx([7 / 7.5, 4 / 7.5, -7 / 7.5, 2 / 7.5])
    # One outlier in the first group of 32 coarsens only that group's steps; one scale per row coarsens all 64.
    torch.manual_seed(0)
    x = torch.randn(1, 64) * 0.02
    x[0, 0] = 1.0
    per_row = (round_int(x, IntFormat("int4", 4)) - x)[0, 32:].abs().max()
    per_group = (round_int(x, FORMATS["int4_g32"]) - x)[0, 32:].abs().max()
    assert per_group < per_row / 10
    # NF4's levels are exact: a block made of (level x its largest value) comes back unchanged.
    levels = torch.tensor([-1.0, -0.6961928009986877, 0.0, 0.07958029955625534, 0.5626170039176941, 1.0] * 16) * 3
    assert torch.allclose(round_int(levels, FORMATS["nf4_b64"]), levels)


@pytest.mark.parametrize("name, method", [("int8", "torchao_int8"), ("int4_g32", "torchao_int4")])
def test_integer_rounding_equals_torchaos_quantize_dequantize(name, method):
    """numerics' int8 (per row) and int4 (per group of 32) are the weight-only quantization quantize.py runs: torchao's
    symmetric scale (largest |value| / 127.5 over the levels -128..127, / 7.5 over -8..7), value for value."""
    from torchao.quantization import quantize_

    from ftlab.quantization import torchao_config

    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 8, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 96) * torch.logspace(-3, 1, 8).unsqueeze(1))
        layer.weight[0, 5], layer.weight[1, 40], layer.weight[2] = 30.0, -30.0, 0.0  # outliers (+ and -), a zero row
    weight = layer.weight.detach().clone()
    quantize_(layer, torchao_config(method))
    assert torch.equal(round_int(weight, FORMATS[name]), layer.weight.dequantize())


def test_tally_counts_overflow_underflow_and_error():
    tally = Tally(["fp32", "fp16", "bf16", "int8", "fp8_e4m3"])
    tally.add(torch.tensor([70000.0, 1e-8, 1.0, 0.0]))
    tally.add(torch.tensor([[3.0, -2.0]]))
    rows = {r["format"]: r for r in tally.rows()}
    assert (rows["fp16"]["overflow"], rows["fp16"]["underflow"]) == (1, 1)
    assert (rows["bf16"]["overflow"], rows["bf16"]["underflow"]) == (0, 0)
    assert rows["fp32"]["relative_error"] == 0 and rows["int8"]["overflow"] == 0
    assert rows["fp8_e4m3"]["overflow"] == 1  # 70000 (3.0 and 1.0 fit; e4m3's largest is 448)
    rows_apart = Tally(["int8"])  # one scale per row: the small row keeps its own precision
    rows_apart.add(torch.tensor([[1000.0, 1.0], [0.001, 0.002]]))
    assert rows_apart.rows()[0]["underflow"] == 1  # only the 1.0 beside 1000 (below half a step of 1000/127.5)
    fp8 = Tally(["fp8_e4m3"])
    fp8.add(torch.tensor([463.0, 464.0, 465.0]))  # 464 is a tie between 448 and (beyond) 480: it rounds to even, 448
    assert fp8.rows()[0]["overflow"] == 1
    assert 0 < rows["bf16"]["relative_error"] < 2**-8  # at most half of bf16's relative step
    summary = tally.summary()
    assert summary["values"] == 6 and summary["nonzero"] == 5 and summary["largest"] == 70000.0
    assert summary["log2_histogram"][16] == 1 and summary["log2_histogram"][-27] == 1  # 70000 ~ 2^16.1, 1e-8 ~ 2^-26.6
    with pytest.raises(ValueError, match="unknown format"):
        Tally(["fp12"])


# ---- The format analysis on a real (tiny) model ------------------------------------------------------------
def test_formats_script_measures_every_kind_of_tensor(tiny_model, tmp_path):
    out = tmp_path / "formats"
    result = run_script("08_quantization/formats.py", "--config", "08_quantization/formats.yaml",
                        "--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--examples", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("device: cpu (")  # the first line: where the model runs (no GPU here)
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cpu"
    for kind in ("weights", "linear_inputs", "residual", "residual_squared", "gradients"):
        rows = {r["format"]: r for r in results[kind]["formats"]}
        assert results[kind]["values"] > 0 and rows["fp32"]["relative_error"] == 0, kind
        assert 0 < rows["bf16"]["relative_error"] < 2**-8 and rows["bf16"]["overflow"] == 0, kind
        assert rows["int4_g32"]["relative_error"] > rows["int8"]["relative_error"], kind
    assert set(results["whole_model"]) == {"float16", "bfloat16"}
    assert (out / "formats.png").stat().st_size > 0 and "| fp16 |" in (out / "results.md").read_text()


# ---- PTQ: every method on the tiny model, saved, loaded back, scored -----------------------------------------
@pytest.fixture(scope="module")
def ptq(tiny_model_64, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptq") / "run"
    result = run_script("08_quantization/quantize.py", "--config", "08_quantization/quantize.yaml",
                        "--model_name_or_path", str(tiny_model_64), "--output_dir", str(out), "--methods", *ALL_METHODS,
                        "--eval_samples", "4", "--handwritten_file", "none", "--max_new_tokens", "8",
                        "--decode_tokens", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}


def test_every_method_quantizes_generates_and_is_scored(ptq):
    out, rows = ptq
    assert list(rows) == ALL_METHODS
    for method, row in rows.items():
        assert "error" not in row, row
        assert row["scores"]["synthetic"]["n"] == 4 and row["decode_tokens_per_second"] > 0, method
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and set(ALL_METHODS) <= set(predictions[0])
    assert "| bnb_nf4 |" in (out / "results.md").read_text()


def test_the_compute_dtype_is_the_devices_own_format(ptq):
    """quantize.py takes its device and 16-bit format from ftlab.platforms (here the CPU's: bf16 where native)."""
    from ftlab.platforms import choose, detect

    out, _ = ptq
    results = json.loads((out / "results.json").read_text())
    choice = choose(detect())
    assert results["device"] == choice.device == "cpu" and results["compute_dtype"] == f"torch.{choice.dtype}"


@pytest.mark.parametrize("method, device_map, dtype", [
    ("bnb_nf4", {"": "cuda"}, torch.float16),     # a T4's format: quantized on the GPU, computing in fp16
    ("bnb_int8", {"": "cuda"}, torch.bfloat16),
    ("bnb_nf4", {"": "cpu"}, torch.bfloat16),
])
def test_load_model_quantizes_bitsandbytes_on_the_device_in_its_format(method, device_map, dtype, tiny_model_64,
                                                                       monkeypatch):
    """bitsandbytes quantizes a model on the device it loads to: `device_map` carries the device, and NF4's compute
    dtype is the device's format (no GPU needed: from_pretrained is replaced by a recorder)."""
    from transformers import AutoModelForCausalLM

    from ftlab.quantization import load_model

    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        return torch.nn.Linear(1, 1)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    load_model(str(tiny_model_64), method, dtype, device=device_map[""])
    assert seen["device_map"] == device_map and seen["dtype"] == dtype
    if method == "bnb_nf4":
        assert seen["quantization_config"].bnb_4bit_compute_dtype == dtype


@pytest.mark.gpu
def test_every_method_quantizes_and_scores_on_the_gpu(tiny_model_64, tmp_path):
    """On CUDA: each method's model lives there (bitsandbytes quantized there), decodes and is scored, in the GPU's
    16-bit format; none is 'not run here'."""
    from ftlab.platforms import choose, detect

    out = tmp_path / "gpu"
    result = run_script("08_quantization/quantize.py", "--config", "08_quantization/quantize.yaml",
                        "--model_name_or_path", str(tiny_model_64), "--output_dir", str(out), "--methods", *ALL_METHODS,
                        "--eval_samples", "4", "--handwritten_file", "none", "--max_new_tokens", "8",
                        "--decode_tokens", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("device: cuda, ")
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cuda" and results["compute_dtype"] == f"torch.{choose(detect()).dtype}"
    for row in results["rows"]:
        assert "error" not in row and row["scores"]["synthetic"]["n"] == 4, row


@pytest.mark.gpu
def test_bnb_nf4_is_quantized_on_cuda_and_generates_there(tiny_model_64):
    from ftlab.quantization import load_model

    model, _ = load_model(str(tiny_model_64), "bnb_nf4", torch.bfloat16, device="cuda")
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert weight.device.type == "cuda" and weight.dtype == torch.uint8 and weight.quant_state.dtype == torch.bfloat16
    generated = model.generate(input_ids=torch.tensor([[1, 5, 9, 40, 3]], device="cuda"), max_new_tokens=3,
                               min_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 8)


@pytest.mark.gpu
def test_formats_runs_the_model_on_the_gpu(tiny_model, tmp_path):
    out = tmp_path / "formats"
    result = run_script("08_quantization/formats.py", "--config", "08_quantization/formats.yaml",
                        "--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--examples", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("device: cuda (")
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cuda" and set(results["whole_model"]) == {"float16", "bfloat16"}


def test_sizes_on_disk_shrink_as_expected(ptq, tiny_model_64):
    """16 bits are half of 32; 8-bit weights save one byte per linear weight against bf16 (the embedding stays 16-bit
    in every method), NF4 more; torchao's int4 on a CPU stores one value per byte, so it is no smaller than its int8."""
    from transformers import AutoModelForCausalLM

    _, rows = ptq
    disk = {m: r["disk_mb"] * 1e6 for m, r in rows.items()}
    assert disk["bf16"] == pytest.approx(disk["fp32"] / 2, rel=0.02)
    full = AutoModelForCausalLM.from_pretrained(tiny_model_64)
    linear = sum(m.weight.numel() for n, m in full.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    assert disk["bf16"] - disk["bnb_int8"] == pytest.approx(linear, rel=0.15)       # 2 bytes -> 1 (+ row scales)
    assert disk["bf16"] - disk["torchao_int8"] == pytest.approx(linear, rel=0.15)
    assert disk["bnb_nf4"] < disk["bnb_int8"] < disk["bf16"]                         # 2 bytes -> half a byte (+ scales)
    assert disk["torchao_int4"] == pytest.approx(disk["torchao_int8"], rel=0.05)
    # What the weights hold in memory is what was written, near enough (+ file headers); not NF4, which bitsandbytes
    # repacks on a CPU at the first forward (test_memory_is_what_the_model_holds_once_it_has_run)
    for method in [m for m in ALL_METHODS if m != "bnb_nf4"]:
        assert rows[method]["memory_mb"] == pytest.approx(rows[method]["disk_mb"], rel=0.15), method


def held_megabytes(model) -> float:
    """Every tensor reachable from the model (parameters, buffers, and whatever the layers and weights keep beside
    them: bitsandbytes' quantization states), each storage once: an independent count of what it holds."""
    seen, visited, stack, total = set(), set(), [model], 0
    while stack:
        obj = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if isinstance(obj, torch.Tensor) and obj.untyped_storage().data_ptr() not in seen:
            seen.add(obj.untyped_storage().data_ptr())
            total += obj.untyped_storage().nbytes()
        for value in getattr(obj, "__dict__", {}).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else [value]
            stack += [x for x in items if isinstance(x, torch.Tensor | torch.nn.Module)
                      or type(x).__module__.startswith("bitsandbytes")]
    return total / 1e6


@pytest.mark.parametrize("method", ["bf16", "bnb_int8", "bnb_nf4"])
def test_memory_is_what_the_model_holds_once_it_has_run(ptq, tiny_model_64, method):
    """On a CPU bitsandbytes reshapes its layers at the first forward (NF4: repacked for its fused kernel, block
    scales to bf16, the scales' own scales dropped; LLM.int8(): the row scales move to the layer's state), so the
    memory column is measured once the model has run: it equals what the model holds after a forward."""
    from ftlab.quantization import load_model

    out, rows = ptq
    compute = getattr(torch, json.loads((out / "results.json").read_text())["compute_dtype"].removeprefix("torch."))
    model, _ = load_model(str(tiny_model_64), method, compute)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 9, 40, 3]]))
    assert rows[method]["memory_mb"] == pytest.approx(held_megabytes(model), abs=6e-4)


@pytest.mark.parametrize("method", ["bnb_int8", "bnb_nf4", "torchao_int8", "torchao_int4"])
def test_a_saved_quantized_model_loads_back_and_generates(ptq, method):
    from transformers import AutoModelForCausalLM

    out, _ = ptq
    model = AutoModelForCausalLM.from_pretrained(out / method, device_map={"": "cpu"})
    assert getattr(model, "is_quantized", False)
    ids = torch.tensor([[1, 5, 9, 40, 3]])
    generated = model.generate(input_ids=ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 8)


# ---- QAT ----------------------------------------------------------------------------------------------------
def test_qat_prepare_train_convert_on_a_cpu(tiny_model):
    """torchao's QAT flow: fake-quantized linears train (weights change), then convert stores int4 for real."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import FakeQuantizedLinear, QATConfig
    from transformers import AutoModelForCausalLM

    from ftlab.quantization import quantize_torchao, torchao_config, transformer_linears

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    quantize_(model, QATConfig(torchao_config("torchao_int4"), step="prepare"), filter_fn=transformer_linears)
    assert isinstance(model.model.layers[0].mlp.down_proj, FakeQuantizedLinear)
    assert not isinstance(model.lm_head, FakeQuantizedLinear)  # tied to the embedding: kept as it is
    ids = torch.randint(0, 400, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(model.model.layers[0].mlp.down_proj.weight, before)
    quantize_torchao(model, QATConfig(torchao_config("torchao_int4"), step="convert"))
    weight = model.model.layers[0].mlp.down_proj.weight
    assert type(weight).__name__ == "IntxUnpackedToInt8Tensor" and weight.target_dtype == torch.int4
    assert model.generate(input_ids=ids[:1], max_new_tokens=2, do_sample=False).shape == (1, 14)


def test_qat_script_compares_with_ptq_on_the_same_budget(tiny_model, tmp_path):
    out = tmp_path / "qat"
    result = run_script("08_quantization/train_qat.py", "--config", "08_quantization/train_qat.yaml",
                        "--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--max_steps", "2",
                        "--learning_rate", "1e-3", "--logging_steps", "1", "--eval_samples", "4",
                        "--handwritten_file", "none", "--max_new_tokens", "8", "--report_to", "none",
                        "--bf16", "false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["synthetic"]["n"] == 4 and metrics["ptq_after_plain_finetuning"]["synthetic"]["n"] == 4
    assert len(metrics["train_losses"]) == 2 and all(math.isfinite(x) for x in metrics["train_losses"])
    assert metrics["plain_train_seconds"] > 0 and metrics["disk_mb"] > 0
    assert "| QAT + convert |" in result.stdout and (out / "loss_curve.png").exists()
    # Like for like: by default the start model is PTQ'd too, and all three rows round weights of the same dtype (the
    # master weights QAT trains, fp32), not the bf16 quantize.py loads for its torchao_int4 row.
    assert metrics["before"]["synthetic"]["n"] == 4 and "| start model + PTQ |" in result.stdout
    assert metrics["quantized_weights_dtype"] == {"start_ptq": "float32", "plain_then_ptq": "float32", "qat": "float32"}
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out)  # the converted int4 model, back from disk
    assert type(reloaded.model.layers[0].mlp.up_proj.weight).__name__ == "IntxUnpackedToInt8Tensor"


# ---- One-line errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("script, args, says", [
    ("quantize.py", ["--methods", "bf16", "gptq"], "--methods: unknown ['gptq']"),
    ("quantize.py", ["--model_name_or_path", "runs/02_sft_missing"], "make demo"),
    ("train_qat.py", ["--model_name_or_path", "runs/02_sft_missing"], "make demo"),
    ("formats.py", ["--model_name_or_path", "./no_such_model"], "model path not found: ./no_such_model"),
    ("formats.py", ["--formats", "fp16", "fp12"], "--formats: unknown ['fp12']"),
])
def test_bad_input_is_a_one_line_error(tmp_path, script, args, says):
    config = "08_quantization/" + script.replace(".py", ".yaml")
    result = run_script(f"08_quantization/{script}", "--config", config, "--output_dir", str(tmp_path / "o"), *args)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and last.startswith("error: ") and says in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
