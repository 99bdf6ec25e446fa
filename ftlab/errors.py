"""The errors a learner can cause, and how they end a run: one `error:` line, never a traceback.

A wrong path, a malformed data line, a model that is not there, a config value that cannot mean what was
meant, a machine that cannot run what was asked: each is raised as a subclass of `LearnerError`, wherever it
is found (`ftlab.data`, `ftlab.models`, `ftlab.platforms`, `ftlab.startup`). Importing `ftlab.startup`, as every
script does first, installs `show_learner_errors` as Python's last word on an uncaught exception: a
`LearnerError` prints as its one line and the script exits with status 1, so no lesson needs a try/except for
them. So do a Ctrl-C outside training and a disk that filled up (`ftlab.checkpoints`). Any other exception is
a bug, and keeps its full traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn


class LearnerError(Exception):
    """Bad input or an unusable setup that the learner can fix; the message is the one line they see."""


def fail(message) -> NoReturn:
    """Stop the script at once with `error: message` on stderr, exit status 1 (a check written in a script)."""
    raise SystemExit(f"error: {message}")


def one_line(error: BaseException) -> str:
    """The first line of an error's message (or its class name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def show_learner_errors() -> None:
    """Print an uncaught `LearnerError` as one `error:` line instead of a traceback (idempotent); any other
    exception goes on to the hook that was there before (Python's traceback)."""
    previous = sys.excepthook
    if getattr(previous, "shows_learner_errors", False):
        return

    def print_learner_error(kind, error, traceback):
        if issubclass(kind, LearnerError):
            print(f"error: {one_line(error)}", file=sys.stderr)
            return
        try:  # a run's own faults (ftlab/checkpoints.py): Ctrl-C, a full disk
            from ftlab import checkpoints
        except ImportError:
            checkpoints = None
        out = checkpoints and checkpoints.RUN.get("output_dir")
        lead = "\n" if out else ""  # during training: after the progress bar, on a line of its own
        if checkpoints and issubclass(kind, KeyboardInterrupt):  # Ctrl-C outside training, or twice during it
            last = checkpoints.newest_checkpoint(Path(out)) if out else None
            print(f"{lead}error: stopped (Ctrl-C)" + (f"; the last checkpoint is {last}" if last else ""),
                  file=sys.stderr)
        elif checkpoints and (message := checkpoints.disk_full_message(error)):
            print(f"{lead}error: {message}", file=sys.stderr)
        else:
            previous(kind, error, traceback)

    print_learner_error.shows_learner_errors = True
    sys.excepthook = print_learner_error
