"""What keeps a learner's saved work safe when a run is killed, interrupted, out of disk, doubled or diverging.

    prepare_output_dir(...)     # (ftlab.startup) takes the folder's lock; with --resume, picks a checkpoint
    protect(trainer)            # before trainer.train(): Ctrl-C saves, a NaN loss stops, the disk is checked

What each fault does, and what the run does about it:
- **Two runs on one output_dir** (the same command in two terminals): the second would delete or overwrite
  the first's checkpoints. A lock file in the folder names the process that holds it; a second run refuses in
  one line. A lock left by a killed run (its process is gone, or it was taken on another machine, as a
  Colab runtime that disconnected) is taken over, and the run says so.
- **Killed (`kill -9`, a disconnect) during training**: everything up to the newest checkpoint is on disk;
  `--resume true` continues from it exactly (transformers restores the optimizer, scheduler, RNG and data order).
- **Killed while a checkpoint was being written**, or a file cut short later: transformers writes the model,
  optimizer, scheduler and RNG state first and `trainer_state.json` last, and would resume from the highest
  step number whatever is in it. So before resuming, each checkpoint is checked, newest first: its
  `trainer_state.json` must parse, each safetensors file must be as long as its header says, each torch file
  (`optimizer.pt`, ...) must be a whole zip archive. A broken one is renamed `broken-checkpoint-N` (kept for a
  look, ignored by transformers) and the run says which file was broken and which checkpoint it continues from.
- **Ctrl-C**: the step in progress finishes, a checkpoint is saved, the command that continues the run is
  printed, and the script exits (status 130) without a traceback. A second Ctrl-C stops at once.
- **Disk full**: before training, the space the run's checkpoints need (weights + optimizer state, from the
  parameter counts) is compared with the free space, and a run that cannot fit says so in one line. If the disk
  fills anyway (another program writing), the error is one line naming the folder and the size a checkpoint
  needs; the previous checkpoint is untouched (transformers deletes old ones only after a new one is written).
- **A loss that becomes NaN or inf** (a learning rate too high, fp16 overflow): the run stops at the first
  logged step that shows it, before that step is saved, with the step and the likely causes; the last
  checkpoint, saved before it, is good.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shlex
import shutil
import signal
import socket
import sys
import zipfile
from pathlib import Path

from transformers import TrainerCallback

from ftlab.errors import LearnerError

LOCK_NAME = ".ftlab-run.lock"


class RunInUse(LearnerError):
    """Another running process holds this output folder."""


class TrainingDiverged(LearnerError):
    """The loss (or a weight) became NaN or infinite."""


class NotEnoughSpace(LearnerError):
    """The run's checkpoints cannot fit the free space of the output folder's disk."""


# ---- 1. One run per output folder ----------------------------------------------------------------------------
def holder(out: Path) -> dict | None:
    """Who holds `out`'s lock, if a live process on this machine does ({pid, host, command}); None if nobody does.
    A lock whose process has ended, or that was taken on another machine (a Colab runtime that is gone), is stale."""
    import psutil  # an accelerate dependency; safe on every platform (os.kill(pid, 0) terminates on Windows)

    try:
        lock = json.loads((out / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    alive = lock.get("host") == socket.gethostname() and lock.get("pid") != os.getpid() and \
        psutil.pid_exists(lock.get("pid", -1))
    return lock if alive else None


def check_not_in_use(out: Path) -> None:
    """Refuse, in one line, a folder another live process is training into (before anything is deleted)."""
    if (lock := holder(out)) is not None:
        raise RunInUse(f"output_dir {out} is in use by process {lock['pid']} ({lock.get('command', '?')}): wait for it "
                       f"to finish, stop it, or pick another --output_dir")


def take_lock(out: Path) -> None:
    """Write this process's lock into `out` (a stale one is taken over, and said); it is removed at exit."""
    lock = out / LOCK_NAME
    if lock.exists():
        print(f"output_dir {out}: taking over the lock of a run that is no longer running")
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command_line()}),
                    encoding="utf-8")
    atexit.register(release_lock, out)


def release_lock(out: Path) -> None:
    try:
        lock = json.loads((out / LOCK_NAME).read_text(encoding="utf-8"))
        if lock.get("pid") == os.getpid():
            (out / LOCK_NAME).unlink()
    except (OSError, ValueError):
        pass


def command_line(resume: bool = False) -> str:
    """This script's command line, as typed (with `resume`: set to continue the run, --overwrite_output_dir off)."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if resume and name in ("--resume", "--overwrite_output_dir"):
            skip = "=" not in arg
            continue
        args.append(arg)
    return shlex.join(["python", sys.argv[0], *args, *(["--resume", "true"] if resume else [])])


# ---- 2. Checkpoints checked before resuming --------------------------------------------------------------------
def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder (one phrase naming the file), or None if every file is whole."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "trainer_state.json is missing (killed while the checkpoint was being written)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is cut short"
    for file in sorted(folder.iterdir()):
        if file.suffix == ".safetensors" and (why := safetensors_problem(file)):
            return f"{file.name} {why}"
        if file.suffix in (".pt", ".pth", ".bin"):
            try:
                with zipfile.ZipFile(file) as archive:
                    if (bad := archive.testzip()) is not None:
                        return f"{file.name} is damaged ({bad})"
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                return f"{file.name} is damaged ({e})"
    return None


def safetensors_problem(file: Path) -> str | None:
    """Whether a safetensors file is as long as its header says (8-byte header size, JSON header, then the data)."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            if header_size <= 0 or 8 + header_size > size:
                return f"is cut short ({size:,} bytes; its header alone needs {8 + header_size:,})"
            header = json.loads(f.read(header_size))
    except (ValueError, OSError) as e:
        return f"has a broken header ({e})"
    end = max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"), default=0)
    if 8 + header_size + end != size:
        return f"is cut short ({size:,} bytes of {8 + header_size + end:,})"
    return None


def checkpoints_newest_first(out: Path) -> list[Path]:
    """The checkpoint-N folders in `out`, highest step first (what transformers would resume from first)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    steps = [(int(p.name.split("-")[1]), p) for p in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if p.is_dir() and p.name.split("-")[1].isdigit()]
    return [folder for _, folder in sorted(steps, reverse=True)]


def usable_checkpoint(out: Path) -> Path | None:
    """The newest whole checkpoint-N in `out`; newer broken ones are renamed broken-checkpoint-N, each said in a line."""
    for folder in checkpoints_newest_first(out):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        aside = folder.with_name(f"broken-{folder.name}")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        print(f"resume: {folder.name}/{problem}; set aside as {aside.name}")
    return None


# ---- 3. During training: Ctrl-C, a full disk, a loss gone NaN ---------------------------------------------------
# What `protect` knew when training started, for the one-line messages (ftlab.errors prints the disk-full one).
RUN: dict = {}


def checkpoint_bytes(trainer) -> tuple[int, int]:
    """(bytes of the weights a checkpoint holds, bytes of its optimizer state): every weight for a full model, the
    trainable ones for an adapter; two Adam moments per trainable weight (a quarter of that for an 8-bit optimizer)."""
    model = trainer.model
    params = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    adapter = hasattr(model, "peft_config")
    weights = trainable if adapter else sum(p.numel() * p.element_size() for p in params)
    optimizer = 2 * sum(p.numel() * 4 for p in params if p.requires_grad)
    return weights, optimizer // 4 if "8bit" in str(getattr(trainer.args.optim, "value", trainer.args.optim)) else optimizer


def size(n: float) -> str:
    """Bytes, readable: GB (10^9) from 0.1 GB up, else MB."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def space_needed(trainer) -> tuple[int, str]:
    """The disk space the run's saves need at their peak (bytes), and how it was counted (for the message)."""
    weights, optimizer = checkpoint_bytes(trainer)
    args = trainer.args
    checkpoint = weights + optimizer
    saves = 0
    if getattr(args.save_strategy, "value", args.save_strategy) != "no":
        steps = args.max_steps if args.max_steps > 0 else None
        saves = max(1, steps // int(args.save_steps)) if steps and args.save_steps >= 1 else 1
        # a new checkpoint is written before transformers deletes the oldest past save_total_limit
        saves = min(saves, (args.save_total_limit or saves) + 1)
    needed = saves * checkpoint + weights  # ... and the final model
    return needed, (f"{saves} checkpoint(s) of {size(checkpoint)} (weights {size(weights)} + optimizer "
                    f"{size(optimizer)}) + the final model, {size(weights)}")


def check_space(trainer) -> None:
    """Stop, before training, a run whose saves cannot fit the free space of output_dir's disk."""
    out = Path(trainer.args.output_dir)
    needed, counted = space_needed(trainer)
    free = shutil.disk_usage(out if out.exists() else out.parent).free
    RUN.update(output_dir=str(out), checkpoint_bytes=checkpoint_bytes(trainer), saving=None)
    if needed > free:
        raise NotEnoughSpace(f"output_dir {out}: this run needs ~{size(needed)} ({counted}), the disk has "
                             f"{size(free)} free: free some space, pass --save_total_limit 1, or --save_strategy no")


def disk_full_message(error: BaseException) -> str | None:
    """The one line for an error that is the disk filling up (errno 28 anywhere in its chain), else None."""
    import errno

    seen, full = error, False
    while seen is not None and not full:
        full = getattr(seen, "errno", None) == errno.ENOSPC or "No space left on device" in str(seen) or \
            "StorageFull" in str(seen)
        seen = seen.__cause__ or seen.__context__
    weights, optimizer = RUN.get("checkpoint_bytes") or (0, 0)
    if not full and RUN.get("saving"):  # torch.save says only "file write failed": was the disk full?
        full = shutil.disk_usage(RUN["output_dir"]).free < weights + optimizer
    if not full:
        return None
    out = RUN.get("output_dir", "the output folder")
    needs = f"; a checkpoint of this run needs ~{size(weights + optimizer)}" if weights else ""
    last = newest_checkpoint(Path(out)) if out != "the output folder" else None
    return (f"no space left on the disk while writing to {out}{needs}; "
            + (f"the last whole checkpoint, {last.name}, is intact: " if last else "")
            + f"free some space, then continue with: {command_line(resume=True)}")


def newest_checkpoint(out: Path) -> Path | None:
    """The newest whole checkpoint-N in `out` (checked as `usable_checkpoint` does, without setting any aside)."""
    try:
        return next((folder for folder in checkpoints_newest_first(out) if checkpoint_problem(folder) is None), None)
    except OSError:
        return None


class SaveOnCtrlC(TrainerCallback):
    """First Ctrl-C: finish the step, save a checkpoint, print the command that continues, exit 130. Second: stop."""

    def __init__(self, resumable: bool = True):
        self.pressed, self.previous, self.resumable = False, None, resumable

    def on_train_begin(self, args, state, control, **kwargs):
        def handler(signum, frame):
            if self.pressed:  # the second Ctrl-C: stop at once (ftlab.errors prints it as one line)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.pressed = True
            print("\nCtrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again stops at once)",
                  flush=True)

        try:
            self.previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            self.previous = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.pressed:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.pressed and args.process_index == 0 and self.resumable:
            print(f"stopped by Ctrl-C after step {state.global_step}: saved "
                  f"{Path(args.output_dir) / f'checkpoint-{state.global_step}'}\ncontinue with:\n  "
                  f"{command_line(resume=True)}", flush=True)
        elif self.pressed and args.process_index == 0:
            print(f"stopped by Ctrl-C after step {state.global_step}; this script starts over rather than resuming: "
                  f"run it again with\n  {command_line()}", flush=True)
        if self.pressed:
            raise SystemExit(130)


class StopWhenNotFinite(TrainerCallback):
    """Stop at the first logged loss (or gradient norm) that is NaN or infinite, without saving that step, and check
    the trainable weights before every save: a NaN in a checkpoint would make every resume start broken. The run
    ends when training has wound down (progress bar closed), with one line (`TrainingDiverged`)."""

    def __init__(self):
        self.problem = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if self.problem is None and isinstance(value, (int, float)) and not math.isfinite(value):
                self.stop(args, state, control, f"the {'loss' if key == 'loss' else 'gradient norm'} became {value}")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        RUN["saving"] = f"checkpoint-{state.global_step}" if control.should_save else None
        if control.should_save and model is not None and self.problem is None:
            import torch

            if not all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
                self.stop(args, state, control, "a weight became NaN or infinite")

    def on_save(self, args, state, control, **kwargs):
        RUN["saving"] = None

    def stop(self, args, state, control, what: str):
        control.should_save, control.should_evaluate, control.should_training_stop = False, False, True
        self.problem = (what, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.problem is None:
            return
        what, step = self.problem
        last = newest_checkpoint(Path(args.output_dir))
        precision = " in fp16" if args.fp16 else ""
        raise TrainingDiverged(
            f"{what} at step {step} (learning rate {args.learning_rate:g}{precision}): training stopped "
            + (f"and {last.name} is the last good checkpoint; " if last else "with no checkpoint saved; ")
            + f"likely a learning rate too high (try {args.learning_rate / 10:g})"
            + (" or fp16 overflow (use --bf16 true on a card that has it, or --fp16 false)" if args.fp16 else ""))


def protect(trainer, resumable: bool = True) -> None:
    """Call before `trainer.train()`: Ctrl-C saves and stops cleanly, a NaN loss stops before it is saved, and a
    run whose checkpoints cannot fit the disk stops now, in one line (see the module's docstring). `resumable`:
    whether the script takes --resume (Ctrl-C then prints the command that continues, else the one that reruns)."""
    check_space(trainer)
    trainer.add_callback(SaveOnCtrlC(resumable))
    trainer.add_callback(StopWhenNotFinite())
