"""Chat, export and serving (ftlab/chat.py, ftlab/gguf.py, 09_export/): the chat driven through standard input,
merged = base + adapter, the GGUF round trip through llama.cpp's real loader, and several adapters on one base.

The GGUF tests need `make setup-gguf` (llama-cpp-python and llama.cpp's converter); without it they are skipped
with that reason. They use a tiny random Llama with SmolLM2's own tokenizer: llama.cpp's converter recognises
a tokenizer by how it splits text, and knows SmolLM2's, not the toy one the other tests use.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_script

from ftlab import gguf

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
SENTENCE = "Ana Lima, 31, lives in Porto and signed up on 2021-03-05 (ana@example.com)."
needs_llama_cpp = pytest.mark.skipif(gguf.missing() is not None, reason=f"GGUF: {gguf.missing()}")


def chat(run_dir, text: str, *flags: str) -> subprocess.CompletedProcess:
    """`python -m ftlab.chat RUN_DIR` with `text` as what the learner types (then end of input)."""
    return subprocess.run([sys.executable, "-m", "ftlab.chat", str(run_dir), *flags], input=text, cwd=ROOT, env=ENV,
                          text=True, capture_output=True, timeout=300, check=False)


def save_adapter(base_dir, out_dir, seed: int, r: int = 4) -> None:
    """A LoRA adapter with random (non-zero) A and B on the model in `base_dir`, saved with its tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(
        r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)


def logits_of(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0].float()


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    """Two different adapters on the tiny model."""
    root = tmp_path_factory.mktemp("adapters")
    save_adapter(tiny_model, root / "a", seed=1)
    save_adapter(tiny_model, root / "b", seed=2)
    return root / "a", root / "b"


# ---- Chat ---------------------------------------------------------------------------------------------------
def test_chat_task_mode_free_mode_and_end_of_input(tiny_model):
    result = chat(tiny_model, f"{SENTENCE}\n/free\nHello there\nWhat did I say?\n")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("device: cpu, ")  # the first line: where it runs and in which format
    assert "(model;" in out and "Now in task mode" in out
    assert out.count("text> ") == 2 and out.count("you> ") == 3  # one task turn, two free turns, then EOF
    # The random model does not write JSON: the verdict says so, with what the answer starts with.
    assert "-> not valid JSON" in out or "-> valid JSON" in out
    assert "(conversation cleared; free mode)" in out
    assert out.rstrip().endswith("bye") and "Traceback" not in result.stderr


def test_chat_loads_an_adapter_on_its_base(adapters):
    result = chat(adapters[0], f"{SENTENCE}\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(adapter;" in result.stdout and "-> " in result.stdout and "bye" in result.stdout


@pytest.mark.parametrize("card, device, expected", [
    ((7, 5), None, ("cuda", torch.float16)),    # a T4: its fp16, never emulated bf16
    ((9, 0), None, ("cuda", torch.bfloat16)),   # an H100: bf16
    ((9, 0), "cpu", ("cpu", torch.float32)),    # --device cpu: the CPU's format (this fake CPU has no bf16)
])
def test_chat_loads_on_the_chosen_device_in_its_format(card, device, expected, tiny_model, monkeypatch):
    """The chat's device and dtype come from ftlab.platforms (faked here: no GPU needed), and agree."""
    import ftlab.models
    import ftlab.platforms
    from ftlab.chat import TransformersModel

    seen, real_load_output = {}, ftlab.models.load_output

    def load_output(path, dtype=None, device=None):
        seen.update(dtype=dtype, device=device)
        return real_load_output(path)  # the real model, on the CPU

    monkeypatch.setattr(ftlab.platforms, "detect", lambda: ftlab.platforms.Hardware(
        cuda=True, cuda_capability=card, cuda_name="GPU", cuda_count=1, cpu_bf16=False))
    monkeypatch.setattr(ftlab.models, "load_output", load_output)
    model = TransformersModel(tiny_model, device)
    assert (seen["device"], seen["dtype"]) == expected
    assert model.device_line.startswith(f"device: {expected[0]}, {str(expected[1]).removeprefix('torch.')} (")


def test_chat_verdict_reads_answers_as_a_program_would():
    from ftlab.chat import verdict

    good = '{"name": "Ana Lima", "age": 31, "city": "Porto", "email": null, "signup_date": "2021-03-05"}'
    assert "valid JSON with the task's schema" in verdict(good) and '"Ana Lima"' in verdict(good)
    assert "not valid JSON" in verdict("Sure! Here is the JSON: " + good)
    assert "not valid JSON" in verdict("```json\n" + good + "\n```")
    assert "not the task's schema" in verdict('{"name": "Ana Lima", "age": "31"}')
    assert "not the task's schema" in verdict(good.replace("31", '"31"'))
    assert "not valid JSON" in verdict("")


def test_chat_refuses_a_folder_without_a_model(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "config.json").write_text("{}")
    result = chat(tmp_path, "")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "holds no model" in result.stderr and "checkpoint-2/" in result.stderr  # and names what it does hold
    missing = chat(tmp_path / "nope", "")
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_chat_ends_cleanly_on_ctrl_c(tiny_model):
    # Ctrl-C as a terminal delivers it. A shell that starts jobs in the background (CI's can) sets SIGINT to
    # "ignore" for them, and Python then installs no KeyboardInterrupt handler: the chat gets Python's back first.
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             f"sys.argv = ['ftlab.chat', {str(tiny_model)!r}]; runpy.run_module('ftlab.chat', run_name='__main__')")
    process = subprocess.Popen([sys.executable, "-c", start], cwd=ROOT, env=ENV,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""  # read byte by byte from the pipe itself (a buffered reader would keep what communicate() must see)
    while not seen.endswith(b"text> "):  # the model is loaded and the chat waits at its prompt
        byte = os.read(process.stdout.fileno(), 1)
        assert byte, seen.decode(errors="replace") + process.stderr.read().decode(errors="replace")[-2000:]
        seen += byte
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, err = (stream.decode() for stream in process.communicate(timeout=60))
    assert process.returncode == 0 and "(interrupted)" in out and out.rstrip().endswith("bye")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


# ---- Merging an adapter for export ------------------------------------------------------------------------------
def test_exported_merge_equals_base_plus_adapter(tiny_model, adapters, tmp_path):
    """export.py's merged/ gives the logits of the base with the adapter on it (base and merge in fp32 here, so they
    compare exactly; by default both are bf16, as the course's LoRA runs train)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "export"
    result = run_script("09_export/export.py", "--config", "09_export/export.yaml", "--model_name_or_path",
                        str(adapters[0]), "--output_dir", str(out), "--base_dtype", "float32", "--merge_dtype",
                        "float32", "--gguf_types", "none", "--score", "false", "--decode_tokens", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("device: cpu, ")
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not any("lora" in name for name in merged.state_dict())  # a plain model again
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapters[0])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert torch.allclose(logits_of(merged, tokenizer), logits_of(with_adapter, tokenizer), atol=1e-5)
    assert not torch.allclose(logits_of(merged, tokenizer), logits_of(base, tokenizer), atol=1e-3)
    assert (out / "merged" / "chat_template.jinja").is_file()  # what servers and the GGUF converter read
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["trained", "merged/ (float32)"]


def test_export_errors_are_one_line(tiny_model, tmp_path):
    result = run_script("09_export/export.py", "--config", "09_export/export.yaml", "--model_name_or_path",
                        str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: ")
    untrained = tmp_path / "runs" / "02_sft"  # the default model, before `make demo`: the error says to train it
    result = run_script("09_export/export.py", "--config", "09_export/export.yaml", "--model_name_or_path",
                        str(untrained), "--output_dir", str(tmp_path / "o"), "--gguf_types", "none")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: {untrained} does not exist; train it first: make demo"]
    result = run_script("09_export/export.py", "--config", "09_export/export.yaml", "--model_name_or_path",
                        str(tiny_model), "--output_dir", str(tmp_path / "o"), "--gguf_types", "q3_k")
    assert result.returncode == 1 and "unknown ['q3_k']" in result.stderr


# ---- Several adapters on one base ------------------------------------------------------------------------------
def test_set_adapter_switches_to_each_adapter_alone(tiny_model, adapters):
    """One base, two adapters: with either switched in, the logits are those of that adapter on a base of its own."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    alone = [logits_of(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), a), tokenizer)
             for a in adapters]
    shared = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapters[0], adapter_name="a")
    shared.load_adapter(adapters[1], adapter_name="b")
    for _ in range(2):  # back and forth: switching leaves no trace
        for name, own in zip(("a", "b"), alone, strict=True):
            shared.set_adapter(name)
            assert torch.allclose(logits_of(shared, tokenizer), own, atol=1e-5)
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)


def serve_adapters(adapters, out) -> subprocess.CompletedProcess:
    """serve_adapters.py with the two adapters as extract and describe: 2 requests each, in fp32, 8 new tokens."""
    return run_script("09_export/serve_adapters.py", "--config", "09_export/serve_adapters.yaml", "--adapters",
                      f"extract={adapters[0]}", f"describe={adapters[1]}", "--requests", "2", "--dtype", "float32",
                      "--max_new_tokens", "8", "--output_dir", str(out))


def test_serve_adapters_script(adapters, tmp_path):
    out = tmp_path / "serve"
    result = serve_adapters(adapters, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("device: cpu, float32 (")  # --dtype float32 wins over the device's format
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cpu"
    assert [(r["adapter"], r["task"], r["scores"]["n"]) for r in results["rows"]] == [("extract", "extract", 2),
                                                                                    ("describe", "describe", 2)]
    # Switched per request, each adapter answers exactly as its own merged model does (fp32: no rounding apart).
    assert all(r["same_answers"] == 2 for r in results["rows"])
    assert 0 < results["shared"]["adapters_mb"] < results["shared"]["weights_mb"] < results["merged"]["weights_mb"]
    assert "| one base + 2 adapters" in (out / "results.md").read_text()
    bad = run_script("09_export/serve_adapters.py", "--config", "09_export/serve_adapters.yaml", "--adapters",
                     f"translate={adapters[0]}", "--output_dir", str(tmp_path / "bad"))
    assert bad.returncode == 1 and "TASK=FOLDER" in bad.stderr
    missing = run_script("09_export/serve_adapters.py", "--config", "09_export/serve_adapters.yaml", "--adapters",
                         f"extract={tmp_path / 'nope'}", "--output_dir", str(tmp_path / "bad"))
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope'} does not exist; train it first (see this script's docstring)"]


# ---- GGUF: the converter and llama.cpp's loader ------------------------------------------------------------------
@needs_llama_cpp
def test_gguf_round_trip_through_llama_cpp(smol_tiny, tmp_path):
    """export.py writes f32, f16 and q8_0 GGUF files; llama.cpp loads each, tokenizes the chat prompt as transformers
    does, computes the same logits (f32 exactly, f16/q8_0 closely), and export.py scores each through it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "export"
    result = run_script("09_export/export.py", "--config", "09_export/export.yaml", "--model_name_or_path",
                        str(smol_tiny), "--output_dir", str(out), "--merge_dtype", "float32", "--gguf_types", "f32",
                        "f16", "q8_0", "--ollama_gguf", "q8_0", "--eval_samples", "2", "--handwritten_file", "none",
                        "--max_new_tokens", "8", "--decode_tokens", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    from gguf import GGUFReader  # (the gguf package transformers reads GGUF with)

    # The tensors' bytes (the file also holds the 49,152-token vocabulary): f16 is half of f32 (norms stay f32),
    # q8_0 is 34 bytes per 32 weights (one fp16 scale per block), 0.53 of f16.
    weights = {t: sum(int(x.n_bytes) for x in GGUFReader(out / f"model-{t}.gguf").tensors) for t in ("f32", "f16", "q8_0")}
    assert 0.49 < weights["f16"] / weights["f32"] < 0.51 and 0.52 < weights["q8_0"] / weights["f16"] < 0.56
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows if r["name"].startswith("GGUF")] == ["GGUF f32", "GGUF f16", "GGUF q8_0"]
    assert all(r["scores"]["synthetic"]["n"] == 2 and r["decode_tokens_per_second"] > 0 for r in rows)
    f32 = next(r for r in rows if r["name"] == "GGUF f32")
    assert f32["what"] == "tensors: 20 F32" and set(f32["same_answers"]) == {"synthetic"}  # all 20 kept in f32
    assert "FROM ./model-q8_0.gguf" in (out / "Modelfile").read_text()

    tokenizer = AutoTokenizer.from_pretrained(smol_tiny)
    model = AutoModelForCausalLM.from_pretrained(smol_tiny).eval()
    from ftlab.task import prompt_messages

    text = tokenizer.apply_chat_template(prompt_messages(SENTENCE), tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[0, -1]
    for gguf_type, atol in (("f32", 1e-3), ("f16", 2e-2), ("q8_0", 5e-2)):
        from llama_cpp import Llama

        llm = Llama(model_path=str(out / f"model-{gguf_type}.gguf"), n_ctx=512, logits_all=True, verbose=False)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # same tokens, special ones too
        llm.eval(ids)
        got = torch.tensor(llm.eval_logits[-1])
        assert torch.allclose(got, expected, atol=atol), (gguf_type, (got - expected).abs().max())
        # The chat template inside the file formats a conversation as transformers' template does.
        assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template


@needs_llama_cpp
def test_chat_runs_a_gguf_file(smol_tiny, tmp_path):
    target = gguf.convert(smol_tiny, tmp_path / "m.gguf", "f16")
    result = chat(target, f"{SENTENCE}\n", "--max_new_tokens", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(gguf; llama.cpp" in result.stdout and "-> " in result.stdout and "bye" in result.stdout


def test_gguf_says_whether_llama_cpp_runs_on_a_gpu(monkeypatch):
    """llama.cpp runs a GGUF file on the GPU only when llama-cpp-python was built for one (the default build is
    CPU-only): gguf.on_gpu() asks the library, and is False where llama.cpp is not installed."""
    from types import ModuleType

    for built_for_gpu in (True, False):
        fake = ModuleType("llama_cpp")
        fake.llama_supports_gpu_offload = lambda answer=built_for_gpu: answer
        monkeypatch.setitem(sys.modules, "llama_cpp", fake)
        assert gguf.on_gpu() is built_for_gpu
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # importing it raises ImportError
    assert gguf.on_gpu() is False


# ---- On a GPU -------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_chat_runs_on_the_gpu(tiny_model):
    result = chat(tiny_model, f"{SENTENCE}\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("device: cuda, ") and "on cuda" in result.stdout


@pytest.mark.gpu
def test_export_scores_on_the_gpu(tiny_model, adapters, tmp_path):
    """An adapter merged and scored on CUDA (16-bit autocast, and the fp32 check); merged/ reloaded there."""
    out = tmp_path / "export"
    result = run_script("09_export/export.py", "--config", "09_export/export.yaml", "--model_name_or_path",
                        str(adapters[0]), "--output_dir", str(out), "--gguf_types", "none", "--eval_samples", "2",
                        "--handwritten_file", "none", "--max_new_tokens", "8", "--decode_tokens", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("device: cuda, ")
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["trained", "trained, fp32", "merged/ (bfloat16)"]
    assert all(r["scores"]["synthetic"]["n"] == 2 for r in rows)


@pytest.mark.gpu
def test_serve_adapters_on_the_gpu_counts_gpu_memory(adapters, tmp_path):
    out = tmp_path / "serve"
    result = serve_adapters(adapters, out)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cuda" and all(r["same_answers"] == 2 for r in results["rows"])
    assert 0 < results["shared"]["resident_mb"] < results["merged"]["resident_mb"]  # GPU memory: the weights' own
    assert "GPU memory added" in (out / "results.md").read_text()
