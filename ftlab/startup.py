"""The start of every train.py: a quiet import, config in, bad input out as one line, output folder ready.

    from ftlab.startup import parse_config, prepare_output_dir

    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)
    prepare_output_dir(training_args.output_dir, overwrite=..., resume=...)

A learner's first minute decides whether they trust the script. So a wrong path, a YAML typo or a
nonsense number stops the run at once with one line that names the problem (`error: ...`), never a
traceback from deep inside a library, and never a run that trains for minutes on what was a typo.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import fields
from pathlib import Path

# ---- Known harmless messages, dropped where they are logged (matched by text); every other warning shows.
# Filters on these loggers are set before the libraries are imported, so their first message is caught too.
HARMLESS = {
    # torchao registers enums with torch's pytree, which torch 2.14 calls deprecated: nothing for us to do.
    "torch.utils._pytree": "is an Enum subclass and is now natively supported",
    # bitsandbytes looks for an optional CPU 4-bit kernel on the hub and uses its own when it is missing.
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    # DeepSpeed (imported by accelerate) reports, as a warning, that a CPU machine has no GPU.
    "DeepSpeed": "Setting accelerator to CPU",
}


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


for _name, _text in HARMLESS.items():
    logging.getLogger(_name).addFilter(_DropMessage(_text))


class ConfigError(ValueError):
    """Bad input from the config file or the command line; the message is the one line a learner sees."""


def fail(message: str):
    """Stop the script with one line on stderr, exit status 1."""
    raise SystemExit(f"error: {message}")


# ---- Precision from the hardware -----------------------------------------------------------------------
def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (x86 AVX512-BF16 or AMX): there bf16 autocast is ~1.4x fp32.

    Elsewhere bf16 on a CPU is emulated and slower than fp32, so it is detected, not assumed."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPUID checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def default_precision() -> dict:
    """bf16 mixed precision on a CUDA GPU or a bf16-capable CPU, fp32 otherwise; `use_cpu` without CUDA."""
    import torch

    cuda = torch.cuda.is_available()
    return {"bf16": cuda or cpu_has_bf16(), "use_cpu": not cuda}


# ---- Config: dataclass defaults <- YAML file <- flags, with every bad input a one-line error ---------------
# (field, test, what a valid value is). Checked on whichever dataclass has the field.
RULES = [
    ("max_steps", lambda v: v == -1 or v > 0, "a positive number of steps (or -1: train num_train_epochs)"),
    ("num_train_epochs", lambda v: v > 0, "positive"),
    ("learning_rate", lambda v: v > 0, "positive (full finetuning: 1e-5..1e-4; LoRA: 1e-4..2e-3)"),
    ("per_device_train_batch_size", lambda v: v >= 1, "at least 1"),
    ("per_device_eval_batch_size", lambda v: v >= 1, "at least 1"),
    ("gradient_accumulation_steps", lambda v: v >= 1, "at least 1"),
    ("warmup_steps", lambda v: v >= 0, "0 or more (a float below 1 is a fraction of the steps)"),
    ("max_length", lambda v: v is None or v >= 16, "at least 16 tokens (ours are ~200)"),
    ("eval_samples", lambda v: v >= 0, "0 (all) or more"),
    ("max_new_tokens", lambda v: v >= 1, "at least 1"),
    ("lora_r", lambda v: v >= 1, "at least 1"),
    ("lora_alpha", lambda v: v > 0, "positive"),
]


def check_values(*configs) -> None:
    """Refuse values that cannot mean what the learner wanted (a negative step count trains for epochs)."""
    for config in configs:
        names = {f.name for f in fields(config)}
        for name, ok, want in RULES:
            if name in names and not ok(getattr(config, name)):
                raise ConfigError(f"--{name} {getattr(config, name)!r}: must be {want}")


def read_yaml_mapping(path: str) -> None:
    """Check that --config names a readable YAML mapping; a syntax error names its line and column."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: YAML syntax error: {e.problem or e.context}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: cannot read it ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config {path}: must hold `key: value` lines, not {type(config).__name__}")


def parse_config(*dataclass_types, args: list[str] | None = None):
    """Parse defaults <- `--config file.yaml` <- flags into instances of `dataclass_types`, or stop with `error:`.

    Precision follows the hardware unless the file or a flag says otherwise (`--bf16 false`)."""
    from trl import TrlParser

    args = sys.argv[1:] if args is None else args
    parser = TrlParser(dataclass_types)
    known = {f.name for t in dataclass_types for f in fields(t)}
    parser.set_defaults(**{k: v for k, v in default_precision().items() if k in known})
    try:
        if "--config" in args:
            where = args.index("--config") + 1
            if where == len(args):
                raise ConfigError("--config needs a file: --config path/to/config.yaml")
            read_yaml_mapping(args[where])
        parsed = parser.parse_args_and_config(args)
        check_values(*parsed)
    except (ConfigError, ValueError) as e:  # ValueError: unknown key, or a value a library's own check refuses
        fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    return parsed


# ---- The output folder ---------------------------------------------------------------------------------
def prepare_output_dir(output_dir: str, *, overwrite: bool, resume: bool) -> Path:
    """Never train over someone's results by accident: a non-empty folder needs --overwrite_output_dir true
    (which deletes it) or --resume true (which continues from its last checkpoint-*)."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    if resume:
        if not out.is_dir() or get_last_checkpoint(str(out)) is None:
            fail(f"--resume: no checkpoint-* folder in {out}")
    elif out.is_dir() and any(out.iterdir()):
        if not overwrite:
            fail(f"output_dir {out} is not empty; pass --overwrite_output_dir true to replace it "
                 "or --resume true to continue it")
        shutil.rmtree(out)
    return out
