"""benchmarks/gpu_check.py (`make gpu-check`): without a GPU it refuses in one line; its --cpu_smoke mode runs every
piece at the tiny shape on the CPU (the gpu tests listed, the benchmark at --shape tiny, each lesson's GPU config for
2 steps) and builds its table from each lesson's metrics.json.

The smoke run is also where every GPU config (tests/test_gpu_configs.py checks their knobs and memory) parses and
trains 2 steps through its own script, each on a tiny model of its hub model's family: Qwen2.5's configs on a tiny
Qwen2 (its chat template and default system prompt), SmolLM2's (01, 04) on the tiny Llama."""

import json

import pytest
from conftest import run_script

LESSONS = ["01_full_finetuning", "02_sft", "03_dpo", "04_moe", "05_peft_lora", "06_qlora", "08_qat"]


def lesson_config(lesson: str) -> str:
    """The GPU config the check runs for a lesson (benchmarks/gpu_check.py's own list)."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    return next(gpu for name, _, gpu, *_ in gpu_check.LESSONS if name == lesson)


def rows_of(markdown: str) -> dict[str, list[str]]:
    """The piece table's rows by piece name: its cells, stripped."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 10 and cells[0] != "piece":
            rows[cells[0]] = cells
    return rows


def test_refuses_without_cuda_in_one_line(tmp_path):
    result = run_script("benchmarks/gpu_check.py", "--output_root", str(tmp_path), env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: make gpu-check needs an NVIDIA GPU that torch can use; this machine has none (")
    assert not list(tmp_path.iterdir())  # it refused before running anything


QWEN_FAMILY = ["02_sft", "03_dpo", "05_peft_lora", "06_qlora"]  # 08 starts from 02's run


@pytest.fixture(scope="module")
def smoke(tiny_model, tiny_qwen2, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    qwen = [arg for lesson in QWEN_FAMILY for arg in ("--model", f"{lesson}={tiny_qwen2}")]
    result = run_script("benchmarks/gpu_check.py", "--cpu_smoke", "--model_dir", str(tiny_model), *qwen,
                        "--output_root", str(out), timeout=900)
    return out, result


def test_smoke_run_passes_every_piece(smoke):
    out, result = smoke
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["failed"] == []
    assert [p["piece"] for p in report["pieces"]] == ["gpu_tests", "benchmark", *LESSONS]
    assert all(p["seconds"] <= p["limit_seconds"] + 60 for p in report["pieces"])


def test_table_has_one_row_per_lesson_with_its_metrics(smoke):
    out, result = smoke
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    rows = rows_of((out / "gpu_check.md").read_text(encoding="utf-8"))
    assert set(rows) == {"gpu_tests", "benchmark", *LESSONS}
    for lesson in LESSONS:
        m = json.loads((out / lesson / "metrics.json").read_text(encoding="utf-8"))
        _, _, verdict, _, steps, per_step, tokens, peak, synthetic, handwritten = rows[lesson]
        assert verdict == "pass" and int(steps) == len(m["train_losses"]) == 2
        assert per_step == f"{m['train_seconds'] / 2:.3f}" and peak == f"{m['peak_memory_gib']:.2f}"
        assert tokens == ("-" if m["train_tokens_per_second"] is None else f"{m['train_tokens_per_second']:,.0f}")
        assert synthetic.endswith(f"-> {m['after']['synthetic']['exact_match']:.1%}")
        assert handwritten.endswith(f"-> {m['after']['handwritten']['exact_match']:.1%}")
        assert m["after"]["synthetic"]["n"] == 2  # the smoke's eval size reached the script
    assert rows["08_qat"][1] == "02_sft"  # 08's QAT started from the 02_sft run the check had just made
    assert {rows[lesson][1] for lesson in QWEN_FAMILY} == {rows["02_sft"][1]} != {rows["01_full_finetuning"][1]}
    # (--model LESSON=... wins over --model_dir). Each lesson ran its GPU config on the CPU (the suite hides CUDA):
    commands = {p["piece"]: p["command"] for p in json.loads((out / "gpu_check.json").read_text())["pieces"]}
    for lesson in LESSONS:
        command = commands[lesson]
        assert command[command.index("--config") + 1] == lesson_config(lesson)
        assert "device: cpu" in (out / f"{lesson}.log").read_text(encoding="utf-8")


def test_table_holds_the_test_listing_and_the_benchmark(smoke):
    out, result = smoke
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    markdown = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert "tests collected" in rows_of(markdown)["gpu_tests"][2]
    assert "--shape tiny" in markdown and "| transformers + PEFT LoRA (05 train.py) |" in markdown
    assert "| GPU | none: a CPU smoke run |" in markdown
