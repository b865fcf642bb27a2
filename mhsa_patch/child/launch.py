"""``mhsa-patch check``: prove that a patched install gives a model that builds, runs, learns and reloads.

The work runs in a child interpreter against the target's ultralytics (:mod:`mhsa_patch.child.check`), as
ultralytics' own DDP workers would import it. This module starts that child, follows its progress through an events
file (JSON lines) while ultralytics' own output goes straight to the terminal, and returns the child's report.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mhsa_patch.child.protocol import DEBUG_ENV
from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.child.env import child_command
from mhsa_patch.patching.target import Target

# The child must never reach the network: no fonts, no settings sync, no AMP-check model. target_env sets it for
# every child (and mhsa_patch.child.offline enforces it); kept here for callers that import it.
CHILD_ENV = {"YOLO_OFFLINE": "1"}
PROBE_TIMEOUT = 900


def require_applied(target: Target, apply: str = "mhsa-patch apply") -> None:
    """Refuse with one line unless the engine reports the patch applied on ``target``; ``apply`` is the command the
    user would run to patch it (the CLI's ``apply_command``: ``--target`` only where the user needed it)."""
    from mhsa_patch.patching.engine import status

    st = status(target)
    if st.state != "applied":
        hint = {
            "not-applied": f"run '{apply}' first",
            "partial": "the patch is half there; run 'mhsa-patch status' to see which piece is missing",
            "conflict": "an MHSA without the tool's marker is there; run 'mhsa-patch status' for details",
        }.get(st.state, "run 'mhsa-patch status' for details")
        raise PatchError(f"ultralytics {target.version} at {target.package} is not patched (status: {st.state}); {hint}")


def run_child(
    target: Target,
    module: str,
    args: Sequence[str],
    *,
    on_event: Callable[[dict], None] | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float | None = None,
    quiet: bool = False,
    silent: bool = False,
    log: Path | None = None,
    raw_log: Path | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    cwd: Path | None = None,
) -> dict:
    """``python -m module args... --events FILE`` against ``target``; return its result or raise its one-line error.

    The child's stdout and stderr are the parent's (ultralytics' logs and progress bars reach the user as they
    are; with ``quiet``, the child's stdout goes to stderr, keeping stdout for a JSON report; with ``silent``, neither is
    shown unless ``MHSA_PATCH_DEBUG`` is set, the result or the one-line error being all that counts; with ``log``, both
    are appended to that file as plain lines, no escape codes and no ``\\r`` frames, and with ``raw_log`` also as they
    came: ``ablate`` runs several children under one progress display). Each JSON line the child appends to the events
    file is passed to ``on_event`` as it arrives; ``on_start`` gets the process; ``cwd``: the child's working folder.
    """
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mhsa-patch-"))
        events_path = Path(tmp) / "events.jsonl"
        events_path.touch()
        cmd, env = stack.enter_context(
            child_command(target, module, [*args, "--events", str(events_path)], {**CHILD_ENV, **(extra_env or {})})
        )
        sys.stdout.flush()
        sys.stderr.flush()
        sinks: tuple = ()
        if log is not None:
            sinks = (stack.enter_context(open(log, "a", encoding="utf-8")),  # noqa: SIM115
                     stack.enter_context(open(raw_log, "ab")) if raw_log is not None else None)  # noqa: SIM115
            streams = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        elif silent and not os.environ.get(DEBUG_ENV):
            streams = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        else:
            streams = {"stdout": sys.stderr.fileno() if quiet or silent else None}
            dest = {"stdout": sys.stderr if quiet or silent else sys.stdout, "stderr": sys.stderr}
            for name, stream in dest.items():
                if not _is_terminal(stream):
                    # a log, not a terminal: ultralytics' colours and \r progress bars would litter it; copy it plain
                    streams[name] = subprocess.PIPE
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, **streams)
        if sinks:
            copiers = [threading.Thread(target=_copy_plain, args=(proc.stdout, *sinks), daemon=True)]
        else:
            copiers = [
                threading.Thread(target=_copy_plain, args=(src, dest[name]), daemon=True)
                for name, src in (("stdout", proc.stdout), ("stderr", proc.stderr))
                if src is not None
            ]
        for copier in copiers:
            copier.start()
        if on_start is not None:
            on_start(proc)
        result: dict | None = None
        error: str | None = None
        start = time.monotonic()
        pos = 0
        buf = ""
        try:
            with open(events_path, encoding="utf-8") as f:
                while True:
                    rc = proc.poll()
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        if "result" in event:
                            result = event["result"]
                        elif "error" in event:
                            error = event["error"]
                        elif on_event is not None:
                            on_event(event)
                    if rc is not None:
                        break
                    if timeout is not None and time.monotonic() - start > timeout:
                        proc.kill()
                        proc.wait()
                        raise PatchError(f"{module} took longer than {timeout:.0f} s and was stopped")
                    time.sleep(0.05)
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        for copier in copiers:
            copier.join(timeout=10)
        if error is not None:
            raise PatchError(error)
        if result is None and proc.returncode is not None and proc.returncode < 0:
            try:
                name = signal.Signals(-proc.returncode).name
            except ValueError:
                name = f"signal {-proc.returncode}"
            why = " (as the kernel's out-of-memory killer does)" if name == "SIGKILL" else ""
            raise PatchError(f"the child process ({module}) was killed by {name}{why}")
        if result is None:
            raise PatchError(
                f"the child process ({module}) exited with code {proc.returncode} without a result; "
                f"rerun with MHSA_PATCH_DEBUG=1 for its traceback"
            )
        return result


ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _is_terminal(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):  # a test runner's buffer: not a terminal
        return False


def plain(line: str) -> str:
    """A log line as a file should hold it: no escape codes, and of a ``\r``-redrawn progress bar its last state."""
    line = ANSI_RE.sub("", line.rstrip("\n"))
    parts = [p for p in line.split("\r") if p.strip()]
    return parts[-1] if parts else ""


def _copy_plain(src, dest, raw_dest=None) -> None:
    """Copy the child's output to ``dest`` line by line, each through :func:`plain` (and as it came to ``raw_dest``)."""
    for raw in iter(src.readline, b""):
        if raw_dest is not None:
            raw_dest.write(raw)
            raw_dest.flush()
        text = plain(raw.decode("utf-8", errors="replace"))
        if text:
            dest.write(text + "\n")
            dest.flush()
    src.close()


def check_inputs(
    model: str | os.PathLike,
    *,
    imgsz: int = 640,
    train: bool = False,
    runs: int = 10,
    train_imgsz: int = 128,
    epochs: int = 1,
    batch: int = 4,
    images: int = 16,
) -> Path:
    """The model's path once ``check``'s inputs are valid; a one-line :class:`PatchError` otherwise."""
    path = Path(model).expanduser()
    if path.is_dir():
        raise PatchError(f"{path} is a folder: give a model .yaml or a .pt checkpoint")
    if not path.is_file():
        raise PatchError(f"{path}: no such model file")
    if path.suffix not in (".yaml", ".yml", ".pt"):
        raise PatchError(f"{path}: expected a model .yaml or a .pt checkpoint")
    if imgsz < 64 or imgsz % 32:
        raise UsageError(f"--imgsz {imgsz}: must be a multiple of 32, at least 64")
    if train and (train_imgsz < 32 or train_imgsz % 32):
        raise UsageError(f"--train-imgsz {train_imgsz}: must be a multiple of 32, at least 32")
    if runs < 1 or epochs < 1 or batch < 1 or images < 2:
        raise UsageError("--runs, --epochs and --batch must be >= 1 and --images >= 2")
    return path


def run_check(
    target: Target,
    model: str | os.PathLike,
    *,
    train: bool = False,
    imgsz: int = 640,
    runs: int = 10,
    train_imgsz: int = 128,
    epochs: int = 1,
    batch: int = 4,
    images: int = 16,
    keep: str | os.PathLike | None = None,
    on_event: Callable[[dict], None] | None = None,
    quiet: bool = False,
    apply: str = "mhsa-patch apply",
    verbose: bool = False,
) -> dict:
    """Check ``model`` (a model YAML or a ``.pt``) against ``target``; return the child's report.

    The child's own output (ultralytics' logs, progress bars, the trainer's lines) is shown only with ``verbose``;
    otherwise its events (steps, one per finished epoch) are all the caller gets, through ``on_event``.

    Raises :class:`PatchError` (one line) when the target is not patched, the model is missing or does not build,
    or any step fails (non-finite outputs or losses, no gradient through MHSA, checkpoints that do not reload).
    """
    path = check_inputs(
        model, imgsz=imgsz, train=train, runs=runs, train_imgsz=train_imgsz, epochs=epochs, batch=batch, images=images
    )
    require_applied(target, apply)
    args = ["--model", str(path.resolve()), "--imgsz", str(imgsz), "--runs", str(runs)]
    if train:
        args += ["--train", "--train-imgsz", str(train_imgsz), "--epochs", str(epochs), "--batch", str(batch)]
        args += ["--images", str(images)]
        if keep is not None:
            args += ["--keep", str(Path(keep).expanduser().resolve())]
    return run_child(target, "mhsa_patch.child.check", args, on_event=on_event, quiet=quiet, silent=not verbose)


def run_probe(target: Target, cfgs: Sequence[str], imgsz: int, *, timeout: float = PROBE_TIMEOUT) -> dict:
    """Build the configs with the target's ultralytics in a child (:mod:`mhsa_patch.child.probe`); its report.

    Raises :class:`PatchError` (one line) when the child fails, runs past ``timeout`` or a model does not build.
    """
    try:
        return run_child(
            target,
            "mhsa_patch.child.probe",
            [*cfgs, "--imgsz", str(imgsz), "--release", target.version],
            timeout=timeout,
            silent=True,
        )
    except PatchError as e:
        raise PatchError(f"--check: {e}") from None
