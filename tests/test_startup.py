"""ftlab.startup: every script's first lines. Bad input must end in one `error:` line, before any training."""

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from trl import ModelConfig, SFTConfig

from ftlab import platforms, startup


@dataclass
class ScriptArguments:
    eval_samples: int = 40
    max_new_tokens: int = 80


TYPES = (ScriptArguments, SFTConfig, ModelConfig)


def parse(*args):
    return startup.parse_config(*TYPES, args=list(args))


def error_of(*args) -> str:
    with pytest.raises(SystemExit) as stop:
        parse(*args)
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_a_good_config_parses_and_flags_win(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 3.0e-4  # a comment\nmax_steps: 7\n")
    script, training, _ = parse("--config", str(config), "--max_steps", "9", "--output_dir", str(tmp_path / "o"))
    assert training.learning_rate == 3e-4 and training.max_steps == 9 and script.eval_samples == 40


def fake_hardware(monkeypatch, **kind):
    monkeypatch.setattr(platforms, "detect", lambda: platforms.Hardware(**kind))


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_precision_follows_the_hardware_unless_told(tmp_path, monkeypatch, capsys, cpu_bf16):
    fake_hardware(monkeypatch, cpu_bf16=cpu_bf16)
    _, training, _ = parse("--output_dir", str(tmp_path))
    assert (training.use_cpu, training.bf16, training.fp16) == (True, cpu_bf16, False)
    assert f"device: cpu, {'bf16 autocast' if cpu_bf16 else 'fp32'} (CPU with" in capsys.readouterr().out
    _, training, _ = parse("--output_dir", str(tmp_path), "--bf16", "false")
    assert (training.bf16, training.fp16) == (False, False)
    assert f"device: cpu, fp32 ({'as configured' if cpu_bf16 else 'CPU without'}" in capsys.readouterr().out


def test_a_t4_turns_a_bf16_config_into_fp16_and_says_so(tmp_path, monkeypatch, capsys):
    """A faked T4 (compute capability 7.5): fp16 autocast, a config's `dtype: bfloat16` becomes float16 (the weights;
    bitsandbytes' and Unsloth's dtype follow it) and the device line says so; an explicit --bf16 true is refused."""
    fake_hardware(monkeypatch, cuda=True, cuda_capability=(7, 5), cuda_name="Tesla T4", cuda_count=1)
    config = tmp_path / "c.yaml"
    config.write_text("dtype: bfloat16\n")
    _, training, model = parse("--config", str(config), "--output_dir", str(tmp_path / "o"))
    assert (training.use_cpu, training.bf16, training.fp16, model.dtype) == (False, False, True, "float16")
    line = capsys.readouterr().out
    assert "device: cuda, fp16 autocast (Tesla T4, compute capability 7.5 < 8.0, has no bf16; dtype bfloat16 -> " \
           "float16" in line
    # On a real T4 transformers accepts bf16 (torch counts emulation as support); here, without CUDA, it would refuse
    # first with its own message, so it is told what a T4 tells it.
    monkeypatch.setattr("transformers.training_args.is_torch_bf16_gpu_available", lambda: True)
    assert "no bf16 arithmetic" in error_of("--output_dir", str(tmp_path / "o"), "--bf16", "true")


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_an_ampere_or_hopper_card_keeps_bf16(tmp_path, monkeypatch, capsys, capability):
    monkeypatch.setattr(platforms, "detect", lambda: platforms.Hardware(
        cuda=True, cuda_capability=capability, cuda_name="A100", cuda_count=1))
    from ftlab.startup import follow_the_card

    choice = platforms.choose(platforms.detect())
    assert (choice.bf16, choice.dtype) == (True, "bfloat16")
    model = ModelConfig(dtype="bfloat16")
    assert follow_the_card([model], choice) == [] and model.dtype == "bfloat16"


def test_an_unusable_card_and_several_gpus_stop_in_one_line(tmp_path, monkeypatch):
    fake_hardware(monkeypatch, cuda_problem="an NVIDIA GPU is here (driver 535.104.05) but torch cannot use it: ...")
    assert "driver 535.104.05" in error_of("--output_dir", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    fake_hardware(monkeypatch, cuda=True, cuda_capability=(9, 0), cuda_count=4)
    message = error_of("--output_dir", str(tmp_path))
    assert "4 GPUs are visible" in message and "CUDA_VISIBLE_DEVICES=0" in message


def test_a_precision_key_in_the_file_also_wins(tmp_path, monkeypatch):
    fake_hardware(monkeypatch, cpu_bf16=True)
    config = tmp_path / "c.yaml"
    config.write_text("bf16: false\n")
    _, training, _ = parse("--config", str(config), "--output_dir", str(tmp_path / "o"))
    assert training.bf16 is False


def test_use_cpu_keeps_a_gpu_machine_on_its_cpu(tmp_path, monkeypatch, capsys):
    # An Apple GPU would get bf16 on mps; --use_cpu true moves the run, and precision follows the CPU instead.
    fake_hardware(monkeypatch, mps=True, cpu_bf16=False)
    _, training, _ = parse("--output_dir", str(tmp_path), "--use_cpu", "true")
    assert (training.use_cpu, training.bf16) == (True, False)
    assert "device: cpu, fp32" in capsys.readouterr().out


def test_a_missing_linux_only_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(platforms, "installed", lambda module: False)
    monkeypatch.setattr(platforms.sys, "platform", "darwin")
    message = error_of("--output_dir", str(tmp_path), "--deepspeed", "configs/ds.json")
    assert "DeepSpeed is not available on macOS" in message and "Instead: train without --deepspeed" in message
    message = error_of("--output_dir", str(tmp_path), "--use_liger_kernel", "true")
    assert "Liger Kernel is not available on macOS" in message


def test_liger_is_refused_off_an_nvidia_gpu(tmp_path, monkeypatch):
    fake_hardware(monkeypatch, cpu_bf16=True)
    monkeypatch.setattr(platforms, "installed", lambda module: True)
    assert "run on NVIDIA GPUs only; this run trains on cpu" in error_of(
        "--output_dir", str(tmp_path), "--use_liger_kernel", "true")


def test_missing_config_file(tmp_path):
    assert "nope.yaml: no such file" in error_of("--config", str(tmp_path / "nope.yaml"))


def test_config_flag_without_a_file():
    assert "--config needs a file" in error_of("--config")


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("learning_rate: 1e-4\nmax_steps: [20\nseed: 1\n")
    message = error_of("--config", str(config))
    assert "YAML syntax error" in message and f"{config}:3:" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    config = tmp_path / "list.yaml"
    config.write_text("- learning_rate\n- 1e-4\n")
    assert "key: value" in error_of("--config", str(config))


def test_unknown_key_is_named(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("learning_rat: 1e-4\n")
    assert "learning_rat" in error_of("--config", str(config), "--output_dir", str(tmp_path))


@pytest.mark.parametrize("flag, value", [
    ("--max_steps", "-5"), ("--max_steps", "0"), ("--learning_rate", "0"), ("--learning_rate", "-1e-4"),
    ("--per_device_train_batch_size", "0"), ("--gradient_accumulation_steps", "0"), ("--eval_samples", "-1"),
    ("--max_new_tokens", "0"), ("--warmup_steps", "-1"), ("--max_length", "4"), ("--num_train_epochs", "0"),
])
def test_nonsense_numbers_are_refused(tmp_path, flag, value):
    message = error_of("--output_dir", str(tmp_path), f"{flag}={value}")  # = keeps "-1e-4" a value
    assert flag.lstrip("-") in message and "must be" in message


def test_max_steps_minus_one_still_means_epochs(tmp_path):
    _, training, _ = parse("--output_dir", str(tmp_path), "--max_steps", "-1", "--num_train_epochs", "2")
    assert training.max_steps == -1


def test_output_dir_protection(tmp_path):
    out = tmp_path / "run"
    assert startup.prepare_output_dir(str(out), overwrite=False, resume=False) == out  # absent: fine, and made
    assert out.is_dir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        startup.prepare_output_dir(str(out), overwrite=False, resume=False)
    with pytest.raises(SystemExit, match="no checkpoint"):
        startup.prepare_output_dir(str(out), overwrite=False, resume=True)
    startup.prepare_output_dir(str(out), overwrite=True, resume=False)
    assert out.is_dir() and [p.name for p in out.iterdir()] == [".ftlab-run.lock"]  # emptied, and this run's lock


@pytest.mark.parametrize("logger_name", sorted(startup.HARMLESS))
def test_known_harmless_messages_are_dropped_and_others_kept(logger_name):
    logger = logging.getLogger(logger_name)
    seen = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = seen.append  # whatever passes the logger's filters reaches its handlers
    logger.addHandler(handler)
    try:
        logger.warning("%s (details)", startup.HARMLESS[logger_name])
        logger.warning("a real problem")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["a real problem"]


def test_a_legacy_console_encoding_prints_instead_of_crashing():
    # A Windows console or redirected log in cp1252 cannot encode every name in our data.
    done = subprocess.run([sys.executable, "-c", "import ftlab.startup; print('Nguyễn Thị Ánh, Łódź')"],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "cp1252"}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("cp1252").strip() == "Nguy?n Th? Ánh, ?ód?"


def test_peek_reads_one_key_before_the_full_parse(tmp_path):
    """03_rlhf picks its config class (DPOConfig, KTOConfig...) from `method` before parsing the rest."""
    config = tmp_path / "c.yaml"
    config.write_text("method: kto\nbeta: 0.1\n")
    assert startup.peek("method", "dpo", ["--config", str(config)]) == "kto"
    assert startup.peek("method", "dpo", ["--config", str(config), "--method", "orpo"]) == "orpo"  # a flag wins
    assert startup.peek("method", "dpo", ["--method=orpo", "--config", str(config)]) == "orpo"
    assert startup.peek("method", "dpo", []) == "dpo"
    with pytest.raises(SystemExit, match="error: --config nope.yaml: no such file"):
        startup.peek("method", "dpo", ["--config", "nope.yaml"])
