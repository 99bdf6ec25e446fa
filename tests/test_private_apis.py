"""ftlab.private_apis: every private library internal ftlab uses is listed, exists in the installed versions, and
a version that drops or reshapes one stops the run with one line that names it (fast, CPU only, no model)."""

import ast
import inspect
import re
import sys
import time
import tomllib
import warnings
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from ftlab import private_apis
from ftlab.private_apis import (
    INTERNALS,
    LIBRARIES,
    TRL_LOGPROB_KERNEL,
    PrivateAPIChanged,
    PrivateAPIWarning,
    check,
    check_all,
    forget,
    installed_version,
    problem,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def checked_afresh():
    """Each test checks afresh, and leaves no cached result from its faked library behind."""
    forget()
    yield
    forget()


def one_line_error(library: str) -> str:
    with pytest.raises(PrivateAPIChanged) as caught:
        check(library)
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, RuntimeError)
    return message


# ---- The installed versions have every listed internal -------------------------------------------------------
@pytest.mark.parametrize("entry", INTERNALS, ids=lambda e: e.name)
def test_every_listed_internal_exists_in_the_installed_version(entry):
    version = installed_version(entry.library)
    if version is None:
        pytest.skip(f"{LIBRARIES[entry.library].dist} is not installed here")
    assert problem(entry, version) is None


def test_check_all_passes_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_all()


def test_another_version_alone_says_nothing(monkeypatch):
    """Another version of every library, each internal still there: no error, no warning."""
    installed = private_apis.installed_version
    monkeypatch.setattr(private_apis, "installed_version", lambda library: installed(library) and "99.0.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_all()


def test_entries_are_complete_and_unique():
    assert len({e.name for e in INTERNALS}) == len(INTERNALS)
    for entry in INTERNALS:
        assert entry.library in LIBRARIES and entry.name.startswith(entry.library)
        assert re.match(r"(ftlab|0\d_\w+|benchmarks|configs)/\S+\.py ", entry.used_by), entry.used_by
        assert (ROOT / entry.used_by.split()[0]).exists(), entry.used_by
        assert entry.why and entry.checked_against == LIBRARIES[entry.library].checked_against


# ---- A changed library fails loudly, in one line -------------------------------------------------------------
def test_a_missing_internal_raises_one_line_naming_it_and_the_versions(monkeypatch):
    from trl.trainer import utils

    monkeypatch.delattr(utils, "_ChunkedLogProbFunction")
    monkeypatch.setattr(private_apis, "installed_version", lambda library: "1.16.0")
    assert one_line_error("trl") == (
        "trl 1.16.0: trl.trainer.utils._ChunkedLogProbFunction (used by ftlab/trl_cpu.py install(), "
        "triton_runs_on()) is gone; checked against trl 1.15.0; pin trl==1.15.0 (pyproject.toml) or update "
        "ftlab/trl_cpu.py install(), triton_runs_on()")


def test_install_stops_with_that_line_before_patching(monkeypatch):
    from trl.trainer import utils

    from ftlab.trl_cpu import install

    monkeypatch.delattr(utils, "_ChunkedLogProbFunction")
    with pytest.raises(PrivateAPIChanged, match=r"_ChunkedLogProbFunction .* is gone"):
        install()
    assert not hasattr(utils, "_ChunkedLogProbFunction")  # nothing was patched in


def test_a_missing_module_is_gone_too(monkeypatch):
    """A fake `llama_cpp` package without `_utils` (llama-cpp-python need not be installed)."""
    import types

    fake = types.ModuleType("llama_cpp")
    fake.__path__ = []  # a package whose submodules do not exist
    for name in [name for name in sys.modules if name.startswith("llama_cpp.")]:  # where it is installed and loaded
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    monkeypatch.setattr(private_apis, "installed_version", lambda library: "0.4.0")
    message = one_line_error("llama_cpp")
    assert message.startswith("llama-cpp-python 0.4.0: llama_cpp._utils.suppress_stdout_stderr (used by "
                              "ftlab/gguf.py quantize()) is gone; checked against llama-cpp-python 0.3.36")
    assert "pin llama-cpp-python==0.3.36 (Makefile LLAMA_CPP_PYTHON)" in message


def test_a_reshaped_kernel_has_changed(monkeypatch):
    """TRL passing the kernel other arguments would feed `log_probs_in_pytorch` the wrong ones: stop instead."""
    import torch
    from trl.trainer import utils

    class Kernel(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets):
            return hidden

    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", Kernel)
    message = one_line_error("trl")
    assert "trl.trainer.utils._ChunkedLogProbFunction" in message and "has changed" in message
    assert "_ChunkedLogProbFunction.forward takes (ctx, hidden, weight, targets), not (ctx, hidden, " in message

    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", "a string")
    forget()
    assert "has changed (a str, not a torch.autograd.Function)" in one_line_error("trl")


def test_trl_no_longer_reading_the_patched_name_has_changed(monkeypatch):
    """If TRL took its kernel from elsewhere, install()'s patch would do nothing and a CPU run would crash later."""
    from trl.trainer import utils

    monkeypatch.setattr(utils, "add_fused_lm_head", lambda model, outputs=(): model)
    assert "has changed (trl.trainer.utils.add_fused_lm_head no longer reads it)" in one_line_error("trl")


def test_an_instance_attribute_no_longer_set_is_gone(monkeypatch):
    import trl

    def __init__(self, *args, **kwargs):
        self.metrics = {}

    monkeypatch.setattr(trl.SFTTrainer, "__init__", __init__)
    message = one_line_error("trl")
    assert message.startswith("trl ") and "trl.SFTTrainer._metrics (used by ftlab/trl_cpu.py" in message
    assert "is gone (trl.SFTTrainer.__init__ no longer sets it); checked against trl 1.15.0" in message


def test_accelerates_autocast_wrapper_moved_is_gone(monkeypatch):
    import accelerate

    def prepare_model(self, model, device_placement=None, evaluation_mode=False):
        return model

    monkeypatch.setattr(accelerate.Accelerator, "prepare_model", prepare_model)
    message = one_line_error("accelerate")
    assert "accelerate.Accelerator.prepare_model:model.forward (used by ftlab/evaluation.py evaluate_all())" in message
    assert "pin accelerate==1.15.0 (pyproject.toml)" in message


def test_an_internal_with_a_fallback_warns_in_one_line(monkeypatch):
    import torch

    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    with pytest.warns(PrivateAPIWarning) as caught:
        check("torch")
    (warning,) = [w for w in caught if issubclass(w.category, PrivateAPIWarning)]
    message = str(warning.message)
    assert "\n" not in message and "torch.cpu._is_amx_tile_supported" in message and "is gone" in message
    assert message.endswith("until then cpu_has_bf16() answers False: a CPU with native bf16 trains in fp32 "
                            "(slower, not wrong)")


def test_check_is_idempotent_and_cheap(monkeypatch):
    """Checked once per process: later calls (every training step reads the kernel through the list) cost ~nothing."""
    from trl.trainer import utils

    check("trl")
    start = time.perf_counter()
    for _ in range(1000):
        check("trl")
        TRL_LOGPROB_KERNEL.get()
    assert time.perf_counter() - start < 0.5
    monkeypatch.delattr(utils, "_ChunkedLogProbFunction")
    check("trl")  # the cached verdict stands ...
    forget()
    with pytest.raises(PrivateAPIChanged):  # ... until forgotten
        check("trl")


def test_an_unknown_library_is_an_error():
    with pytest.raises(KeyError, match="lists no library 'trasformers'"):
        check("trasformers")


# ---- The versions checked against are the ones the project pins ----------------------------------------------
def pinned_requirements() -> dict[str, str]:
    """pyproject.toml's dependencies: distribution name (lower case, '-') -> its version specifier."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for line in dependencies:
        requirement = line.split(";")[0].strip()
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group()
        pins[name.lower().replace("_", "-")] = requirement[len(name):].strip()
    return pins


@pytest.mark.parametrize("library", LIBRARIES)
def test_checked_against_the_pinned_versions(library):
    spec = LIBRARIES[library]
    if spec.pinned_in == "pyproject.toml":
        pin = pinned_requirements()[spec.dist.lower()]
        if pin.startswith("=="):
            assert pin == f"=={spec.checked_against}", f"re-check ftlab/private_apis.py against {spec.dist}{pin}"
        else:  # a range (torch): the version checked against must be one it allows
            assert SpecifierSet(pin).contains(spec.checked_against), (pin, spec.checked_against)
    else:
        assert spec.pinned_in == "Makefile LLAMA_CPP_PYTHON"
        makefile = (ROOT / "Makefile").read_text()
        pin = re.search(r"^LLAMA_CPP_PYTHON\s*\??=\s*(\S+)", makefile, re.MULTILINE).group(1)
        assert pin == spec.checked_against


# ---- The code takes its names from the list ------------------------------------------------------------------
def test_the_cpu_log_probs_take_the_kernels_arguments():
    from ftlab.trl_cpu import log_probs_in_pytorch

    assert ("ctx", *inspect.signature(log_probs_in_pytorch).parameters) == TRL_LOGPROB_KERNEL.params


def test_install_patches_the_listed_name_and_the_check_sees_through_it():
    from ftlab.trl_cpu import LogProbsOnAnyDevice, install

    install()
    kernel = TRL_LOGPROB_KERNEL.get()
    assert isinstance(kernel, LogProbsOnAnyDevice)
    forget()
    check("trl")  # TRL's own kernel, behind ours, is what gets checked


def scanned_files() -> list[Path]:
    files = [*(ROOT / "ftlab").glob("*.py"), *ROOT.glob("0*/*.py"), *(ROOT / "benchmarks").glob("*.py"),
             ROOT / "configs/llamafactory/score.py"]
    return sorted(f for f in files if f.name != "private_apis.py")


def attribute_name_argument(call: ast.Call) -> str | None:
    """The attribute name a call spells as a string: getattr(obj, "_x"), hasattr/setattr/delattr, or
    obj.__dict__.pop("_x") / .get("_x")."""
    func, args = call.func, call.args
    if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr", "setattr", "delattr") and len(args) >= 2:
        name = args[1]
    elif (isinstance(func, ast.Attribute) and func.attr in ("pop", "get") and args
          and isinstance(func.value, ast.Attribute) and func.value.attr == "__dict__"):
        name = args[0]
    else:
        return None
    return name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else None


def private_uses(path: Path) -> set[str]:
    """Library internals named in one file: `obj._x` (not our own `self._x`), `from a._b import c`,
    `from a import _b`, and `getattr(obj, "_x")`-style strings; our own private names are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    own |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    for function in ast.walk(tree):  # attributes our own classes set up in __init__
        if isinstance(function, ast.FunctionDef) and function.name == "__init__":
            own |= {t.attr for n in ast.walk(function) if isinstance(n, ast.Assign) for t in n.targets
                    if isinstance(t, ast.Attribute)}
    private = re.compile(r"^_[A-Za-z]\w*$")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private.match(node.attr) and node.attr not in own:
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] != "ftlab":
            if any(private.match(part) for part in node.module.split(".")):
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            found |= {f"{node.module}.{a.name}" for a in node.names if private.match(a.name)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if any(private.match(p) for p in a.name.split("."))}
        elif isinstance(node, ast.Call) and (name := attribute_name_argument(node)) and private.match(name):
            found.add(name)
    return found


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_private_use_in_the_code_is_listed(path):
    """A library internal used in ftlab, a lesson, a benchmark or score.py must be listed in ftlab/private_apis.py
    (found by its attribute name or dotted import), with this file as where it is used."""
    relative = str(path.relative_to(ROOT))
    listed = {name for e in INTERNALS if e.used_by.startswith(relative + " ") for name in (e.attr, e.name)}
    unlisted = {use for use in private_uses(path) if use not in listed and use.rpartition(".")[2] not in listed}
    assert not unlisted, f"{relative} uses {sorted(unlisted)}: list them in ftlab/private_apis.py"


def test_trl_cpu_takes_the_kernels_name_from_the_list():
    """The patched name is written once, in ftlab/private_apis.py: trl_cpu's code never spells it."""
    tree = ast.parse((ROOT / "ftlab/trl_cpu.py").read_text(encoding="utf-8"))
    spelled = [n for n in ast.walk(tree) if (isinstance(n, ast.Attribute) and n.attr == TRL_LOGPROB_KERNEL.attr)
               or (isinstance(n, ast.Name) and n.id == TRL_LOGPROB_KERNEL.attr)]
    assert not spelled
    used = private_uses(ROOT / "ftlab/trl_cpu.py")
    assert used == {"_metrics", "_total_train_tokens"}  # TRL's instance attributes, listed and checked
