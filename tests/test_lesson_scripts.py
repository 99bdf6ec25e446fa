"""The shape every lesson script keeps: the technique in sight, the plumbing a call away.

Read from the scripts' source (nothing runs): every training script calls `trainer.train(` itself; no script
catches a learner error only to print it (start-up prints any `LearnerError` as one line: ftlab/errors.py); no
`main()` runs past 100 lines; no lesson imports or runs another lesson's script (a later lesson starts from a
saved model folder on disk, never from another folder's code).
"""

import ast
import re

import pytest
from conftest import ROOT

LESSONS = sorted(p for p in ROOT.glob("[0-9][0-9]_*/*.py"))
TRAINING = [p for p in LESSONS if p.name.startswith("train")]
FOLDERS = sorted({p.parent.name for p in LESSONS})


def name(path) -> str:
    return str(path.relative_to(ROOT))


def test_the_lessons_are_found():
    assert len(TRAINING) >= 10 and len(FOLDERS) >= 9, (TRAINING, FOLDERS)


@pytest.mark.parametrize("path", TRAINING, ids=name)
def test_every_training_script_calls_trainer_train_itself(path):
    assert re.search(r"\btrainer\.train\(", path.read_text(encoding="utf-8")), f"{name(path)}: no trainer.train("


@pytest.mark.parametrize("path", TRAINING, ids=name)
def test_every_training_script_is_protected_from_the_faults_of_tests_test_faults(path):
    """The output folder's lock and checked resume (prepare_output_dir), and Ctrl-C, a full disk and a NaN loss
    (protect) before every trainer.train(): the shared code tests/test_faults.py runs through 02."""
    text = path.read_text(encoding="utf-8")
    trains, protects = len(re.findall(r"\btrainer\.train\(", text)), len(re.findall(r"\bprotect\(trainer\b", text))
    assert protects == trains, f"{name(path)}: {trains} trainer.train( but {protects} protect(trainer"
    assert re.search(r"\bprepare_(shared_)?output_dir\(", text), f"{name(path)}: no prepare_output_dir("


def calls(node: ast.AST, function: str) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == function
               for n in ast.walk(node))


@pytest.mark.parametrize("path", LESSONS, ids=name)
def test_no_script_catches_an_error_only_to_print_it(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    handlers = [h for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and calls(h, "fail")]
    assert not handlers, f"{name(path)}: except ... fail( at line(s) {[h.lineno for h in handlers]}"


@pytest.mark.parametrize("path", LESSONS, ids=name)
def test_no_main_is_longer_than_100_lines(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"):
        length = function.end_lineno - function.lineno + 1
        assert length <= 100, f"{name(path)}: main() is {length} lines"


@pytest.mark.parametrize("path", LESSONS, ids=name)
def test_no_lesson_runs_or_imports_another_lessons_script(path):
    text = path.read_text(encoding="utf-8")
    assert "runpy" not in text, f"{name(path)}: runs another script with runpy"
    code = "\n".join(line for line in text.splitlines() if re.match(r"\s*(import|from)\s", line))
    others = [folder for folder in FOLDERS if folder != path.parent.name and folder in code]
    assert not others, f"{name(path)}: imports from {others}"
