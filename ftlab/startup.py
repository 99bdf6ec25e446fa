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
import os
import shutil
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from ftlab.errors import LearnerError, fail, one_line, show_learner_errors

show_learner_errors()  # an uncaught LearnerError (data, model, config, platform) ends the run as one `error:` line

# On an Apple GPU, an operation MPS lacks runs on the CPU instead of stopping the run (set before torch loads).
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
# A console or log file in a legacy encoding (Windows' cp1252) prints "?" for a name it cannot show, not a crash.
for _stream in (sys.stdout, sys.stderr):
    if hasattr(_stream, "reconfigure") and (_stream.encoding or "").lower().replace("-", "") != "utf8":
        _stream.reconfigure(errors="replace")

# ---- Known harmless messages, dropped where they are logged (matched by text); every other warning shows.
# Filters on these loggers are set before the libraries are imported, so their first message is caught too.
HARMLESS = {
    # torchao registers enums with torch's pytree, which torch 2.14 calls deprecated: nothing for us to do.
    "torch.utils._pytree": "is an Enum subclass and is now natively supported",
    # bitsandbytes looks for an optional CPU 4-bit kernel on the hub and uses its own when it is missing.
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    # DeepSpeed (imported by accelerate) reports, as a warning, that a CPU machine has no GPU.
    "DeepSpeed": "Setting accelerator to CPU",
    # Without Triton (any Mac, Windows) torch notes that its FLOP counter cannot see Triton kernels; we use none.
    "torch.utils.flop_counter": "triton not found; flop counting will not work for triton kernels",
}


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


for _name, _text in HARMLESS.items():
    logging.getLogger(_name).addFilter(_DropMessage(_text))


class ConfigError(LearnerError, ValueError):
    """Bad input from the config file or the command line; the message is the one line a learner sees."""


# ---- The arguments every lesson script shares (each adds its own in a subclass) ---------------------------
@dataclass
class EvalArguments:
    """What every script that scores the task shares: the eval sets, the answer budget, the output folder's rule."""

    eval_file: str | None = field(default=None, metadata={"help": "SFT JSONL file; default data/sft_eval.jsonl (describe_eval for --task describe)"})
    eval_samples: int = field(default=40, metadata={"help": "synthetic eval examples used (0 = all): scores (and eval loss)"})
    handwritten_file: str | None = field(
        default=None, metadata={"help": "hand-written eval set (text + answer); default data/handwritten_eval.jsonl, "
                                        "'none' to skip"})
    max_new_tokens: int = field(default=80, metadata={"help": "generation budget per answer (ours need <= 70)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete a non-empty output_dir first"})


@dataclass
class TaskArguments(EvalArguments):
    """What every training script shares: the task and its files, the forgetting probe, scoring before, resuming."""

    task: str = field(default="extract", metadata={
        "help": "extract (text -> JSON, every folder's task) or describe (JSON -> one sentence, the second skill "
                "07_model_merging merges in); picks the default data files and the metric",
        "choices": ("extract", "describe")})
    train_file: str | None = field(default=None, metadata={"help": "SFT JSONL file; default data/sft_train.jsonl (describe_train for --task describe)"})
    probe_file: str | None = field(
        default=None, metadata={"help": "general questions asked before and after (forgetting probe); default "
                                        "data/general_probe.jsonl, 'none' to skip"})
    eval_before: bool = field(default=True, metadata={"help": "score the untrained model first"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})


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


def read_yaml_mapping(path: str) -> dict:
    """The `key: value` pairs of --config's file; a missing file or a syntax error (with line and column) stops."""
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
    return config


def config_file(args: list[str]) -> dict:
    """The mapping in the file `--config` names among `args` ({} without --config)."""
    if "--config" not in args:
        return {}
    where = args.index("--config") + 1
    if where == len(args):
        raise ConfigError("--config needs a file: --config path/to/config.yaml")
    return read_yaml_mapping(args[where])


def given(name: str, args: list[str], config: dict) -> bool:
    """Whether the learner set `name` in the config file or as a flag (then no default of ours applies)."""
    return name in config or any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def peek(name: str, default: str, args: list[str] | None = None) -> str:
    """One key's value before the full parse (a flag wins over --config's file, as in `parse_config`), for a
    script whose config class depends on it: 03_rlhf's `method: dpo | kto | orpo` picks DPOConfig, KTOConfig..."""
    args = sys.argv[1:] if args is None else args
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    try:
        return str(config_file(args).get(name, default))
    except ConfigError as e:
        fail(str(e))


def parse_config(*dataclass_types, args: list[str] | None = None):
    """Parse defaults <- `--config file.yaml` <- flags into instances of `dataclass_types`, or stop with `error:`.

    Device and precision follow the hardware (`ftlab.platforms.choose`) unless the file or a flag sets
    `use_cpu`, `bf16` or `fp16`; setting one of bf16/fp16 turns our choice of the other off. On a GPU without
    bf16 (a T4) a config's `dtype: bfloat16` becomes float16 and `--bf16 true` is refused; an NVIDIA card torch
    cannot use, or several GPUs under plain `python`, stop here in one line (`ftlab.platforms` says why)."""
    from trl import TrlParser

    from ftlab.platforms import PlatformError, choose, detect, missing, precision_name, several_gpus_problem

    args = sys.argv[1:] if args is None else args
    parser = TrlParser(dataclass_types)
    known = {f.name for t in dataclass_types for f in fields(t)}
    notes = []
    try:
        config = config_file(args)
        # A Linux-only package named by a key: say so before TrainingArguments tries to import it.
        if given("deepspeed", args, config) and (problem := missing("deepspeed")):
            raise ConfigError(problem)
        if "use_cpu" in known:  # a script with TrainingArguments: pick its device and number format
            use_cpu = given("use_cpu", args, config) and any(
                getattr(c, "use_cpu", False) for c in parser.parse_args_and_config(args))
            hardware = detect()
            choice = choose(hardware, use_cpu=use_cpu)
            if problem := several_gpus_problem(hardware, choice.device):
                raise ConfigError(problem)
            defaults = choice.training_arguments()
            if given("bf16", args, config) or given("fp16", args, config):
                defaults.update(bf16=False, fp16=False)
            # transformers' default logs a NaN step's loss as the window's average: the loss would look fine while
            # the weights are gone. Logged as it is, a NaN stops the run (ftlab.checkpoints.StopWhenNotFinite).
            defaults["logging_nan_inf_filter"] = False
            parser.set_defaults(**defaults)
        parsed = parser.parse_args_and_config(args)
        check_values(*parsed)
        if "use_cpu" in known:
            notes = follow_the_card(parsed, choice)
    except PlatformError as e:
        fail(str(e))
    except (ConfigError, ValueError) as e:  # ValueError: unknown key, or a value a library's own check refuses
        fail(one_line(e))
    for training in (c for c in parsed if hasattr(c, "use_cpu")):
        precision = precision_name(training.bf16, training.fp16)
        why = choice.why if precision == choice.precision else "as configured"
        print(f"device: {choice.device}, {precision} ({why}{''.join('; ' + n for n in notes)}; "
              "--use_cpu true, --bf16 false, --fp16 true override)")
        if getattr(training, "use_liger_kernel", False):
            if problem := missing("liger_kernel"):
                fail(problem)
            if choice.device != "cuda":
                fail(f"--use_liger_kernel: Liger's kernels run on NVIDIA GPUs only; this run trains on {choice.device}")
    return parsed


def follow_the_card(parsed, choice) -> list[str]:
    """On a GPU without bf16 arithmetic (compute capability < 8.0, e.g. a T4), what was asked in bf16 follows the
    card: a `dtype: bfloat16` (the weights; bitsandbytes' and Unsloth's dtype follow it) becomes float16, said in
    the device line; `bf16: true` for training is refused (it would run emulated, far slower, or fail in Unsloth)."""
    if choice.device != "cuda" or choice.bf16:
        return []
    notes = []
    for config in parsed:
        if getattr(config, "bf16", False):
            raise ConfigError(f"--bf16 true: this GPU has no bf16 arithmetic ({choice.why}); leave bf16 unset "
                              "(fp16 autocast is chosen for it) or pass --fp16 true")
        if getattr(config, "dtype", None) == "bfloat16":
            config.dtype = "float16"
            notes.append("dtype bfloat16 -> float16 (no bf16 on this GPU)")
    return notes


# ---- The output folder ---------------------------------------------------------------------------------
def prepare_output_dir(output_dir: str, *, overwrite: bool, resume: bool, lock: bool = True) -> Path:
    """Never train over someone's results by accident: a non-empty folder needs --overwrite_output_dir true
    (which deletes it) or --resume true (which continues from its newest whole checkpoint-*, checked file by file:
    `ftlab.checkpoints`). A folder another live run is writing to is refused in one line, before anything is
    deleted; with `lock`, this run takes the folder's lock until it exits (under a launcher, the first process
    takes it for all). Returns the folder, made."""
    from ftlab.checkpoints import LOCK_NAME, check_not_in_use, take_lock, usable_checkpoint

    out = Path(output_dir)
    if lock and out.is_dir():
        check_not_in_use(out)
    if resume:
        if not out.is_dir() or not any(out.glob("checkpoint-*")):
            fail(f"--resume: no checkpoint-* folder in {out}")
        if (checkpoint := usable_checkpoint(out)) is None:
            fail(f"--resume: no whole checkpoint left in {out} (the broken ones are set aside as broken-checkpoint-*)")
        print(f"resume: continuing from {checkpoint}")
    elif out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        if not overwrite:
            fail(f"output_dir {out} is not empty; pass --overwrite_output_dir true to replace it "
                 "or --resume true to continue it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if lock:
        take_lock(out)
    return out


# ---- Under a launcher (accelerate, torchrun, deepspeed): one process per device ----------------------------
def quiet_other_processes(training_args) -> bool:
    """True in the first process. The others train silently (their stdout goes nowhere): one copy of every line,
    as on one device. Without a launcher there is one process, the first."""
    main_process = training_args.process_index == 0
    if not main_process:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    return main_process


def prepare_shared_output_dir(training_args, *, overwrite: bool, resume: bool) -> Path:
    """`prepare_output_dir` for every process of a run: the first clears and makes the folder, the others wait
    for it and then find it so (instead of each clearing what another has begun to write)."""
    with training_args.main_process_first():
        return prepare_output_dir(training_args.output_dir, overwrite=overwrite, resume=resume,
                                  lock=training_args.process_index == 0)


def end_processes() -> None:
    """Under a launcher, stop the process group's threads before Python exits; in one process, nothing to do."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
