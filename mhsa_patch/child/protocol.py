"""The one protocol between the tool and its child processes (``probe``, ``check``, ``port``), child side.

A child runs ``python -c BOOT ... mhsa_patch.child.<name> ARGS --events FILE`` (see :mod:`mhsa_patch.child.env`)
with the target's ``ultralytics/`` first on ``sys.path``, so it imports exactly the copy that was patched. It reports
to the parent through an events file of JSON lines: ``{"step": name, "msg": ...}`` while it works, then one
``{"result": ...}`` or ``{"error": "one line"}``. stdout and stderr stay ultralytics', whose own logs and progress
bars reach the user unchanged. The parent side is :func:`mhsa_patch.child.launch.run_child`.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback

DEBUG_ENV = "MHSA_PATCH_DEBUG"  # set to 1 to get the child's traceback on stderr as well as the one line


class ChildError(Exception):
    """A failure the parent prints as one line."""


class Events:
    """Append-only JSON-lines channel to the parent (flushed after every event)."""

    def __init__(self, path: str | os.PathLike | None):
        self._f = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (kept open for the run)
        self._t0 = time.monotonic()

    def emit(self, **event) -> None:
        if self._f is None:
            return
        event["t"] = round(time.monotonic() - self._t0, 3)
        self._f.write(json.dumps(event, default=str) + "\n")
        self._f.flush()

    def step(self, name: str, msg: str) -> None:
        self.emit(step=name, msg=msg)

    def done(self, name: str, msg: str) -> None:
        self.emit(done=name, msg=msg)


def run_main(work, events_path: str | None) -> int:
    """Run ``work(events)``; turn any exception into one ``error`` event (and exit code 1), never a bare traceback."""
    events = Events(events_path)
    try:
        result = work(events)
    except ChildError as e:
        events.emit(error=str(e))
        return 1
    except KeyboardInterrupt:
        events.emit(error="interrupted")
        return 130
    except BaseException as e:  # noqa: BLE001 - the parent shows one line; MHSA_PATCH_DEBUG=1 shows the rest
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        events.emit(error=one_line(e))
        return 1
    events.emit(result=result)
    return 0


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``, ANSI colours and ultralytics' emoji prefixes removed."""
    msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    msg = msg.splitlines()[0] if msg else ""
    msg = re.sub(r"^(ERROR|WARNING)\s*\S*\s*", "", msg)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
