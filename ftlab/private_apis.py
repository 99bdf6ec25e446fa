"""Every private internal of a library that ftlab relies on, in one list, and the check that guards each use.

A private name (`_ChunkedLogProbFunction`, `self._metrics`, accelerate's `model._original_forward`) carries no
promise: a minor release may rename, move or reshape it. Pinning the libraries (pyproject.toml) keeps a fresh
install on the versions listed here; the check below is for an install that is not: it runs where the
internal is used (`ftlab.trl_cpu.install()` calls `check("trl")` before it patches TRL), and a version
that removed or reshaped an internal stops the run there with ONE line that names it, the versions and the
fix, instead of failing silently or deep inside training:

    trl 1.16.0: trl.trainer.utils._ChunkedLogProbFunction (used by ftlab/trl_cpu.py install()) is gone;
    checked against trl 1.15.0; pin trl==1.15.0 (pyproject.toml) or update ftlab/trl_cpu.py install()

(all on one line). Another version alone says nothing: if every internal it lists is still there with the
same kind and signature, the code that uses them works as checked. An internal whose use has a harmless
fallback (`fallback`) warns in one line (`PrivateAPIWarning`) instead of stopping the run.

What is checked, per entry: that the dotted name still resolves (an instance attribute: that the library
function which sets it still stores it, `stored_by`); its kind (`expect`); its parameters (`params`); and that
the library code our patch or value must reach still reads the name (`read_by`), found in the bytecode
(co_names), so no source files are needed. Each library is checked once per process (`check` is cheap after
the first call: a set lookup); `forget()` starts over. Nothing here imports a library until it is checked.

    from ftlab import private_apis
    private_apis.check("trl")                           # raise PrivateAPIChanged (one line) if an internal broke
    private_apis.TRL_LOGPROB_KERNEL.get()               # the object, resolved from the dotted name listed here
    private_apis.TRL_LOGPROB_KERNEL.set(replacement)    # a monkeypatch of a module attribute
    private_apis.check_all()                            # every installed library (the test suite does it)
"""

from __future__ import annotations

import dis
import importlib
import importlib.metadata
import importlib.util
import inspect
import warnings
from dataclasses import dataclass

from ftlab.errors import LearnerError


class PrivateAPIChanged(LearnerError, RuntimeError):
    """An installed library no longer has a private internal ftlab uses, or it changed shape; one-line message."""


class PrivateAPIWarning(UserWarning):
    """As `PrivateAPIChanged`, for an internal whose use has a fallback: the run goes on, degraded as it says."""


@dataclass(frozen=True)
class Library:
    dist: str              # the distribution's name, for its version and the pin (`pip install <dist>==<version>`)
    checked_against: str   # the version every entry below was read and tested against
    pinned_in: str         # where the project pins it


LIBRARIES = {  # import name -> Library
    "trl": Library("trl", "1.15.0", "pyproject.toml"),
    "accelerate": Library("accelerate", "1.15.0", "pyproject.toml"),
    "torch": Library("torch", "2.14.1", "pyproject.toml"),  # pyproject allows a range (>=2.6,<2.15)
    "bitsandbytes": Library("bitsandbytes", "0.50.2", "pyproject.toml"),
    "llama_cpp": Library("llama-cpp-python", "0.3.36", "Makefile LLAMA_CPP_PYTHON"),  # make setup-gguf builds it
}


@dataclass(frozen=True)
class Internal:
    """One private internal: what it is, where ftlab uses it and why, and what its check expects."""

    library: str                   # import name, a key of LIBRARIES
    name: str                      # dotted name, as the messages print it
    used_by: str                   # "file function()" in this repository
    why: str
    expect: str = ""               # "module", "class", "callable", "autograd.Function or None", "" (anything)
    params: tuple[str, ...] | None = None  # its parameter names (of `signature_of` on it), in order
    signature_of: str = ""         # "forward": the parameters of obj.forward; "" the object's own
    stored_by: str = ""            # an instance attribute: the library function that sets it (`self.<attr> = ...`)
    read_by: tuple[str, ...] = ()  # library functions that must still read the name (where our patch takes effect)
    fallback: str = ""             # what the code does without it: then a warning, not an error

    @property
    def attr(self) -> str:
        """The last part of the name: the attribute (or module) name itself ("_ChunkedLogProbFunction")."""
        return self.name.rpartition(".")[2]

    @property
    def checked_against(self) -> str:
        return LIBRARIES[self.library].checked_against

    def get(self):
        """The object the name resolves to now (a module attribute or a module), after `check(self.library)`."""
        if self.stored_by:
            raise TypeError(f"{self.name} is an instance attribute; read it from the instance")
        check(self.library)
        return _resolve(self.name)

    def set(self, value) -> None:
        """Replace the module attribute this names (a monkeypatch), after `check(self.library)`."""
        if self.stored_by:
            raise TypeError(f"{self.name} is an instance attribute; set it on the instance")
        check(self.library)
        setattr(_resolve(self.name.rpartition(".")[0]), self.attr, value)


# ---- The list ------------------------------------------------------------------------------------------------
TRL_LOGPROB_KERNEL = Internal(
    "trl", "trl.trainer.utils._ChunkedLogProbFunction", "ftlab/trl_cpu.py install(), triton_runs_on()",
    "TRL's Triton kernel for the fused LM head's per-token log-probabilities (SFT, DPO, KTO, GRPO, RLOO); "
    "Triton has no CPU backend, so install() puts a dispatcher in its place that computes the same five outputs "
    "in PyTorch off the GPU (log_probs_in_pytorch takes the kernel's arguments, in its order)",
    expect="autograd.Function or None",  # None where Triton is not installed (macOS, Windows)
    params=("ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size", "final_logit_softcapping",
            "logit_scale", "outputs"),
    signature_of="forward",
    read_by=("trl.trainer.utils.add_fused_lm_head",))  # looked up as a module global at each call: the patch works

SFT_METRICS = Internal(
    "trl", "trl.SFTTrainer._metrics", "ftlab/trl_cpu.py SFTTrainer.compute_loss(), _count_tokens()",
    "the per-step values SFTTrainer.log() averages and logs; the CPU path appends mean_token_accuracy and sets "
    "num_tokens there, as TRL's compute_loss does",
    stored_by="trl.SFTTrainer.__init__", read_by=("trl.SFTTrainer.log",))

SFT_TOTAL_TRAIN_TOKENS = Internal(
    "trl", "trl.SFTTrainer._total_train_tokens", "ftlab/trl_cpu.py SFTTrainer._count_tokens(), tokens_seen",
    "TRL's running count of non-padding tokens trained on (logged as num_tokens); the CPU path keeps it counting",
    stored_by="trl.SFTTrainer.__init__", read_by=("trl.SFTTrainer.compute_loss",))

SFT_AUX_LOSS_ENABLED = Internal(
    "trl", "trl.SFTTrainer.aux_loss_enabled", "ftlab/trl_cpu.py SFTTrainer.fast_path_fits()",
    "whether TRL adds an MoE's router load-balancing loss (undocumented attribute); then the CPU path, which "
    "has no router logits, leaves the loss to TRL",
    stored_by="trl.SFTTrainer.__init__", read_by=("trl.SFTTrainer.compute_loss",))

RL_CALCULATE_REWARDS = tuple(Internal(
    "trl", f"trl.{trainer}._calculate_rewards", "03_rlhf/train_rl.py log_tied_groups()",
    "scores one batch of sampled answers with every reward, (answers, rewards), before the advantages are taken; "
    "log_tied_groups wraps it on the trainer instance to count the groups whose answers all scored the same",
    expect="callable", params=("self", "inputs", "prompts", "completions", "completion_ids_list"),
    read_by=(f"trl.{trainer}._generate_and_score_completions",))
    for trainer in ("GRPOTrainer", "RLOOTrainer"))

RL_LOG_METRIC = tuple(Internal(
    "trl", f"trl.{trainer}._log_metric", "03_rlhf/train_rl.py log_tied_groups()",
    "TRL's hook for an extra scalar metric, averaged over each logging step beside kl (reward functions get it as "
    "their `log_metric` argument; the reward model, an nn.Module, does not, so the script calls it itself)",
    expect="callable", params=("self", "name", "value"))
    for trainer in ("GRPOTrainer", "RLOOTrainer"))

ACCELERATE_FORWARD = Internal(
    "accelerate", "accelerate.Accelerator.prepare_model:model.forward", "ftlab/evaluation.py evaluate_all()",
    "with mixed precision, prepare_model puts model.forward, wrapped in autocast and a cast of the outputs to "
    "fp32, in the model's instance __dict__; evaluate_all pops it from its CPU copy so that scoring after "
    "training runs in the copy's own dtype, as before training (accelerate's public unwrap, "
    "extract_model_from_parallel(keep_fp32_wrapper=False), also strips transformers' own decorators from forward)",
    stored_by="accelerate.Accelerator.prepare_model")

ACCELERATE_ORIGINAL_FORWARD = Internal(
    "accelerate", "accelerate.Accelerator.prepare_model:model._original_forward", "ftlab/evaluation.py evaluate_all()",
    "where prepare_model keeps the forward it wrapped (a bound method of the model); popped with the wrapper",
    stored_by="accelerate.Accelerator.prepare_model")

ACCELERATE_AUTOCAST_WRAPPER = (ACCELERATE_FORWARD, ACCELERATE_ORIGINAL_FORWARD)

TORCH_CPU_BF16_PROBES = tuple(Internal(
    "torch", f"torch.cpu.{probe}", "ftlab/platforms.py cpu_has_bf16()",
    "torch's own CPUID check for native bf16 matmuls (AVX512-BF16, AMX), which decide bf16 vs fp32 on a CPU",
    expect="callable", params=(),
    fallback="cpu_has_bf16() answers False: a CPU with native bf16 trains in fp32 (slower, not wrong)")
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))

TORCH_PYTREE_LOGGER = Internal(
    "torch", "torch.utils._pytree", "ftlab/startup.py HARMLESS",
    "the logger name (its module) whose known-harmless deprecation message startup filters out",
    expect="module", fallback="the log filter may no longer match: a harmless message shows again")

BNB_AUTOGRAD_LOGGER = Internal(
    "bitsandbytes", "bitsandbytes.autograd._functions", "ftlab/quantization.py load_model()",
    "the logger name (its module) of LLM.int8()'s per-call cast message, set to ERROR for bnb_ methods",
    expect="module", fallback="the log filter may no longer match: LLM.int8()'s cast message shows at every call")

LLAMA_CPP_SUPPRESS_OUTPUT = Internal(
    "llama_cpp", "llama_cpp._utils.suppress_stdout_stderr", "ftlab/gguf.py quantize()",
    "silences the C quantizer's line per tensor (file-descriptor level, which contextlib.redirect_* cannot)",
    expect="class", params=("self", "disable"), signature_of="__init__")

INTERNALS: tuple[Internal, ...] = (
    TRL_LOGPROB_KERNEL, SFT_METRICS, SFT_TOTAL_TRAIN_TOKENS, SFT_AUX_LOSS_ENABLED, *RL_CALCULATE_REWARDS,
    *RL_LOG_METRIC, *ACCELERATE_AUTOCAST_WRAPPER,
    *TORCH_CPU_BF16_PROBES, TORCH_PYTREE_LOGGER, BNB_AUTOGRAD_LOGGER, LLAMA_CPP_SUPPRESS_OUTPUT)


def internal(name: str) -> Internal:
    """The entry for a dotted name."""
    for entry in INTERNALS:
        if entry.name == name:
            return entry
    raise KeyError(f"{name} is not listed in ftlab/private_apis.py")


# ---- The check -----------------------------------------------------------------------------------------------
_checked: set[str] = set()  # libraries whose entries passed in this process


def installed_version(library: str) -> str | None:
    """The installed distribution's version, or None when the library is not installed."""
    if importlib.util.find_spec(library) is None:
        return None
    try:
        return importlib.metadata.version(LIBRARIES[library].dist)
    except importlib.metadata.PackageNotFoundError:
        return getattr(importlib.import_module(library), "__version__", "unknown")


def check(library: str) -> None:
    """Raise `PrivateAPIChanged` (one line) if an internal of `library` listed here is gone or changed shape in
    the installed version; warn (`PrivateAPIWarning`, one line) for one whose use has a fallback. Once per process;
    nothing to check when the library is not installed (the code that needs it fails on its own import)."""
    if library in _checked:
        return
    if library not in LIBRARIES:
        raise KeyError(f"ftlab/private_apis.py lists no library {library!r}: {', '.join(LIBRARIES)}")
    version = installed_version(library)
    if version is not None:
        for entry in INTERNALS:
            if entry.library != library:
                continue
            message = problem(entry, version)
            if message and not entry.fallback:
                raise PrivateAPIChanged(message)
            if message:
                warnings.warn(f"{message}; until then {entry.fallback}", PrivateAPIWarning, stacklevel=2)
    _checked.add(library)


def check_all() -> None:
    """`check` every listed library that is installed."""
    for library in LIBRARIES:
        check(library)


def forget() -> None:
    """Check every library again at its next `check` (tests that fake a change call it)."""
    _checked.clear()


def problem(entry: Internal, version: str) -> str | None:
    """What is wrong with `entry` in the installed `version` of its library, as one line; None if nothing."""
    library = LIBRARIES[entry.library]
    fix = (f"checked against {library.dist} {library.checked_against}; pin {library.dist}=={library.checked_against} "
           f"({library.pinned_in}) or update {entry.used_by}")
    head = f"{library.dist} {version}: {entry.name} (used by {entry.used_by})"
    try:
        if entry.stored_by:
            if not _stores(_resolve(entry.stored_by), entry.attr):
                return f"{head} is gone ({entry.stored_by} no longer sets it); {fix}"
            obj = None
        else:
            obj = _resolve(entry.name)
    except (AttributeError, ImportError):
        return f"{head} is gone; {fix}"
    changed = _shape_problem(entry, obj) if not entry.stored_by else None
    for reader in entry.read_by:
        try:
            if not _reads(_resolve(reader), entry.attr):
                changed = changed or f"{reader} no longer reads it"
        except (AttributeError, ImportError):
            changed = changed or f"{reader} is gone"
    return f"{head} has changed ({changed}); {fix}" if changed else None


def _shape_problem(entry: Internal, obj) -> str | None:
    obj = getattr(obj, "ftlab_replaces", obj)  # our own replacement in its place (ftlab.trl_cpu): check TRL's
    if entry.expect == "module" and not inspect.ismodule(obj):
        return f"a {type(obj).__name__}, not a module"
    if entry.expect == "class" and not inspect.isclass(obj):
        return f"a {type(obj).__name__}, not a class"
    if entry.expect == "callable" and not callable(obj):
        return f"a {type(obj).__name__}, not callable"
    if entry.expect == "autograd.Function or None":
        import torch

        if obj is None:
            return None  # no Triton here: TRL has no kernel, so no signature to compare
        if not (inspect.isclass(obj) and issubclass(obj, torch.autograd.Function)):
            return f"a {type(obj).__name__}, not a torch.autograd.Function"
    if entry.params is not None:
        target = getattr(obj, entry.signature_of) if entry.signature_of else obj
        try:
            params = tuple(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            return None  # a builtin without a signature: nothing to compare
        if params != entry.params:
            where = f"{entry.attr}.{entry.signature_of}" if entry.signature_of else entry.attr
            return f"{where} takes ({', '.join(params)}), not ({', '.join(entry.params)})"
    return None


def _resolve(dotted: str):
    """The object a dotted name (a module, or attributes below one) refers to; AttributeError/ImportError if none."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif inspect.ismodule(obj):
            obj = importlib.import_module(".".join(parts[:i + 1]))
        else:
            raise AttributeError(f"{'.'.join(parts[:i])} has no {part}")
    return obj


def _code_objects(function):
    """The function's code object and every code object nested in it (inner functions, comprehensions)."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    stack = [code] if code is not None else []
    while stack:
        code = stack.pop()
        yield code
        stack += [const for const in code.co_consts if inspect.iscode(const)]


def _stores(function, attr: str) -> bool:
    """Whether `function` (or a function inside it) assigns `<something>.attr = ...`."""
    return any(ins.opname == "STORE_ATTR" and ins.argval == attr
               for code in _code_objects(function) for ins in dis.get_instructions(code))


def _reads(function, name: str) -> bool:
    """Whether `function` (or a function inside it) uses `name` as a global or an attribute."""
    return any(name in code.co_names for code in _code_objects(function))
