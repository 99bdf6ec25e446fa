"""One family for the errors a learner can cause, printed by start-up as one `error:` line (ftlab/errors.py)."""

import subprocess
import sys

import pytest
from conftest import ROOT

from ftlab.data import DataError
from ftlab.errors import LearnerError, show_learner_errors
from ftlab.models import ModelNotFound
from ftlab.platforms import PlatformError
from ftlab.private_apis import PrivateAPIChanged
from ftlab.startup import ConfigError


@pytest.mark.parametrize("kind", [DataError, ModelNotFound, PlatformError, ConfigError, PrivateAPIChanged])
def test_every_learner_error_shares_one_base(kind):
    assert issubclass(kind, LearnerError)


def run_raising(statement: str) -> subprocess.CompletedProcess:
    """A script that imports ftlab.startup (as every lesson does first), then runs `statement`."""
    code = f"import ftlab.startup\nfrom ftlab.data import DataError\n{statement}\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_an_uncaught_learner_error_is_one_line_and_status_1():
    result = run_raising("raise DataError('data/x.jsonl:3: \"answer\" is not valid JSON\\nsecond line')")
    assert result.returncode == 1
    assert result.stderr.strip() == 'error: data/x.jsonl:3: "answer" is not valid JSON', result.stderr


def test_any_other_error_keeps_its_traceback():
    result = run_raising("raise KeyError('a bug')")
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError: 'a bug'" in result.stderr


def test_the_hook_is_installed_once(monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    show_learner_errors()
    hook = sys.excepthook
    show_learner_errors()
    assert sys.excepthook is hook and hook is not sys.__excepthook__
