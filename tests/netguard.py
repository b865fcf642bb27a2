"""A run of the tool with every network access recorded and refused, in the tool and in every child it starts.

A ``sitecustomize.py`` put first on PYTHONPATH records every connect and name lookup (and refuses it) in each process
that inherits the path, and the process itself with the ``YOLO_OFFLINE`` it was started with; the children's own
guard (``mhsa_patch.child.offline``) records the attempts made after ultralytics' import in the same file. Each guarded
run is also a run that other tests read, so that staying offline costs no run of its own: ``check --train`` on the
latest release and on 8.0.98 (test_check.py), ``learn``'s ablate grid (test_ablate.py), ``gen-yaml --check`` on
8.0.98 and the latest (test_yamlgen_builds.py) and ``port-weights`` (trainkit.ported_run, test_port_weights.py).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from pathlib import Path

import trainkit
from helpers import checkout_env

SITECUSTOMIZE = r'''
import os, socket

_LOG = os.environ["MHSA_TEST_NETLOG"]


def _record(what, *args):
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {what}{args!r}\n")
    raise OSError(f"test: network access from {what}")


_connect = socket.socket.connect
def connect(self, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _record("socket.connect", *args)
    return _connect(self, *args)

socket.socket.connect = connect
socket.create_connection = lambda *a, **k: _record("socket.create_connection", *a)
socket.getaddrinfo = lambda *a, **k: _record("socket.getaddrinfo", *a)
socket.gethostbyname = lambda *a, **k: _record("socket.gethostbyname", *a)
with open(os.environ["MHSA_TEST_NETLOG"] + ".pids", "a", encoding="utf-8") as f:
    f.write(f"{os.getpid()} {os.environ.get('YOLO_OFFLINE', '-')}\n")  # as the process was started
'''


@dataclasses.dataclass
class GuardedRun:
    proc: subprocess.CompletedProcess
    attempts: str  # the network accesses tried, one line each: must stay empty
    processes: list[tuple[str, str]]  # (pid, YOLO_OFFLINE as started) of the tool, then of each process it started


class Guard:
    """The guard's environment for one run of the tool (``env``: what to add to the tool's environment, ``site`` on
    the path) and, afterwards, what it recorded (:meth:`record`)."""

    def __init__(self, site: Path):
        folder = Path(tempfile.mkdtemp(prefix="netguard-"))
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.log = folder / "net.log"
        self.log.touch()
        path = os.pathsep.join([str(folder), checkout_env(site, offline=False)["PYTHONPATH"]])
        self.env = {"PYTHONPATH": path, "MHSA_TEST_NETLOG": str(self.log), "MHSA_PATCH_NETLOG": str(self.log)}

    def record(self, proc: subprocess.CompletedProcess) -> GuardedRun:
        pids = Path(str(self.log) + ".pids")
        processes = [tuple(line.split()) for line in pids.read_text().splitlines()] if pids.exists() else []
        return GuardedRun(proc, self.log.read_text(), processes)


def run(*args: str, site: Path, cwd: Path | None = None, timeout: float = 900) -> GuardedRun:
    """``mhsa-patch args...`` (this checkout's, with ``site`` on the path) under the guard. The test sets no
    YOLO_OFFLINE: the tool must set it for its children itself (trainkit.cli runs the tool with offline=False)."""
    guard = Guard(site)
    return guard.record(trainkit.cli(*args, site=site, env_extra=guard.env, timeout=timeout, cwd=cwd))


def assert_offline(run: GuardedRun) -> None:
    """The run passed, no process tried the network, and every child was started with YOLO_OFFLINE=1 by the tool."""
    trainkit.ok(run.proc)
    assert len(run.processes) >= 2, f"the tool's child did not inherit PYTHONPATH (processes hooked: {run.processes})"
    assert run.attempts == "", f"network access attempted:\n{run.attempts}"
    (_, tool), *children = run.processes
    assert tool == "-" and all(offline == "1" for _, offline in children), run.processes
