"""A two-node Ray cluster on one machine, sharing no run folder: the fixture of the Ray tests (issue 20 A).

What docs/ablate.md's two-node walk-through does, on one machine:

- everything runs in network and PID namespaces of its own (``unshare -rn --pid --fork --mount-proc``, ``lo`` up):
  only 127.0.0.1 exists there, nothing reaches the network, and killing the namespace's first process ends every
  process in it. It also has its own ``/dev/shm`` (a tmpfs: Ray's object store), so nothing is left behind;
- the head node: ``ray get-auth-token --generate``, then ``RAY_AUTH_MODE=token ray start --head --num-cpus=0``
  (no CPU, no GPU: no run can land there), with its own ``HOME`` (where the token is written) and ``--temp-dir``;
- each worker node: its own ``HOME`` holding a copy of the head's token file (``~/.ray/auth_token``, mode 600),
  ``RAY_AUTH_MODE=token``, its own ``--temp-dir`` and ``TMPDIR``, ``ray start --address=127.0.0.1:6379 --block``, in a
  private mount namespace where the driver's folder (``hidden``) is covered by an empty tmpfs, and in a PID namespace
  of its own: :meth:`Cluster.kill` ends every process of that node at once, as a lost machine would;
- the driver runs on the head (:meth:`Cluster.run`), with the head's ``HOME``.

Token authentication stays on (Ray 2.60's default for a new local cluster; ``ray start --head`` turns it on once a
token exists): a worker node without the token is refused with ``InvalidAuthToken``. Nothing goes to the real
``~/.ray`` or ``/tmp/ray``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6379
ADDRESS = f"127.0.0.1:{PORT}"

# Where the cluster's folder is also seen inside the namespace: Ray's Unix sockets live under each node's
# --temp-dir, and a socket's path has at most 107 bytes, which pytest's folders (a pytest run inside a test)
# exceed. A bind mount in the namespace's private /dev/shm keeps them short without touching the machine's own.
SHORT = "/dev/shm/rc"

# The namespace's first process: lo up, a private /dev/shm (Ray's object store; SHORT), then it reaps orphans until
# the test's pipe closes (the test process gone, whatever the reason): its exit ends every process in the namespace.
INIT = r"""
import os, subprocess, sys, threading, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", "/dev/shm"], check=True)
os.mkdir(sys.argv[2])
subprocess.run(["mount", "--bind", sys.argv[1], sys.argv[2]], check=True)
print("ready", flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.1)
"""

# How fast the head calls a silent node dead: about 3 s instead of Ray's default of about 15 s.
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _ns_pids(pid: int) -> list[int]:
    """The process's PIDs from the outermost PID namespace to its own (``NSpid``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def _namespace_init(root_pid: int, depth: int, timeout: float = 30) -> int:
    """The first process of a PID namespace ``depth`` levels below ours, started under ``root_pid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        todo = [root_pid]
        while todo:
            pid = todo.pop()
            ns = _ns_pids(pid)
            if len(ns) == depth + 1 and ns[-1] == 1:
                return pid
            todo += _children(pid)
        time.sleep(0.05)
    raise TimeoutError(f"no PID namespace init under {root_pid}")


@dataclass
class WorkerNode:
    name: str
    home: Path
    temp: Path
    log: Path
    proc: subprocess.Popen
    init: int  # its PID namespace's first process, in our namespace
    killed: bool = False

    def pids(self) -> list[int]:
        """Every live process of this node (its PID namespace), in our numbering."""
        target = os.readlink(f"/proc/{self.init}/ns/pid") if Path(f"/proc/{self.init}").exists() else None
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.readlink(p / "ns" / "pid") == target:
                        out.append(int(p.name))
                except OSError:
                    pass
        return out


@dataclass
class Cluster:
    """A head and worker nodes on 127.0.0.1 in a network namespace of their own (see the module's text)."""

    root: Path  # short: Ray's socket paths live under it
    hidden: Path  # the driver's folder: covered by an empty tmpfs on every worker node
    env: dict[str, str]  # the base environment of every process (the test's)
    workers: list[WorkerNode] = field(default_factory=list)
    servers: list[subprocess.Popen] = field(default_factory=list)
    init: subprocess.Popen | None = None
    init_pid: int = 0

    # --------------------------------------------------------------------------------------------- namespace

    @property
    def head_home(self) -> Path:
        return self.root / "head" / "home"

    def start(self) -> "Cluster":
        if shutil.which("unshare") is None or shutil.which("ip") is None or shutil.which("nsenter") is None:
            pytest.fail("the Ray cluster needs unshare, nsenter (util-linux) and ip (iproute2)")
        self.hidden.mkdir(parents=True, exist_ok=True)
        self.init = subprocess.Popen(
            ["unshare", "-rn", "--pid", "--fork", "--mount-proc", sys.executable, "-c", INIT, str(self.root), SHORT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.init.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the namespace did not start: {line}{self.init.stderr.read()}")
        self.init_pid = _namespace_init(self.init.pid, 1)
        self._start_head()
        return self

    def short(self, path: Path) -> str:
        """``path`` (under ``root``) as the cluster's processes may also reach it, in a few bytes."""
        return f"{SHORT}/{path.relative_to(self.root).as_posix()}"

    def _enter(self, args: list[str], cwd: Path) -> list[str]:
        return ["nsenter", "-t", str(self.init_pid), "-U", "-n", "-p", "-m", "--preserve-credentials",
                f"--wd={cwd}", *args]  # fmt: skip

    def popen(self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, **kw):
        """A process inside the cluster's namespaces, on the head's side (the driver's)."""
        return subprocess.Popen(self._enter(args, cwd or self.root), env=env or self.driver_env(), **kw)

    def run(self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
        """Run a command on the head's side (the driver, ``ray`` commands), text, captured."""
        return subprocess.run(self._enter(args, cwd or self.root), env=env or self.driver_env(), text=True,
                              capture_output=True, timeout=timeout)  # fmt: skip

    def serve_ftp(self, folder: Path, log: Path) -> str:
        """An FTP server for ``folder`` inside the namespace, on the head's side (tests/ftpserver.py), its commands
        logged to ``log``: every node reaches it at 127.0.0.1, as a bucket every node reaches; its ``--storage`` URI.
        It ends with the cluster."""
        import ftpserver

        proc = self.popen([sys.executable, str(Path(__file__).with_name("ftpserver.py")), str(folder), str(log)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"the FTP server did not start: {line!r}")
        self.servers.append(proc)
        return ftpserver.uri(int(line))

    def driver_env(self, **extra: str) -> dict[str, str]:
        """The head's user: its HOME (which holds the token), token authentication on."""
        return dict(self.env, HOME=str(self.head_home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", **extra)

    # ------------------------------------------------------------------------------------------------- nodes

    def _start_head(self) -> None:
        self.head_home.mkdir(parents=True)
        env = dict(self.env, HOME=str(self.head_home), RAY_USAGE_STATS_ENABLED="0")
        r = self.run([RAY, "get-auth-token", "--generate"], env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        env.update(RAY_AUTH_MODE="token", **HEALTH)
        temp = self.short(self.root / "head" / "tmp")
        r = self.run([RAY, "start", "--head", "--num-cpus=0", f"--port={PORT}", f"--temp-dir={temp}",
                      "--include-dashboard=false", "--disable-usage-stats"], env=env, timeout=180)  # fmt: skip
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    def add_worker(self, *, num_cpus: int = 2, token: bool = True, wait: bool = True,
                   binds: dict[Path, Path] | None = None) -> WorkerNode:  # fmt: skip
        """Start a fresh worker node (``ray start --address ... --block``) with its own HOME, temp dirs and mount
        and PID namespaces; with ``wait``, return once it joined (its log says so). ``binds``: folders this node
        sees in place of others (``{path: what it shows}``), as a node whose install differs."""
        name = f"w{len(self.workers)}"
        base = self.root / name
        home, temp, tmp = base / "home", base / "ray", base / "tmp"
        for d in (home, temp, tmp):
            d.mkdir(parents=True)
        env = dict(self.env, HOME=str(home), TMPDIR=str(tmp), RAY_USAGE_STATS_ENABLED="0")
        if token:  # the documented way: the cluster's token file in the node's HOME, and the mode
            (home / ".ray").mkdir()
            shutil.copyfile(self.head_home / ".ray" / "auth_token", home / ".ray" / "auth_token")
            os.chmod(home / ".ray" / "auth_token", 0o600)
            env["RAY_AUTH_MODE"] = "token"
        mounts = [f"mount -t tmpfs tmpfs {self.hidden}"]
        mounts += [f"mount --bind {src} {dest}" for dest, src in (binds or {}).items()]
        start = (f"{' && '.join(mounts)} && exec {RAY} start --address={ADDRESS} --num-cpus={num_cpus} "
                 f"--temp-dir={self.short(temp)} --disable-usage-stats --block")  # fmt: skip
        log = base / "ray-start.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                self._enter(["unshare", "-m", "--pid", "--fork", "--mount-proc", "sh", "-c", start], base), env=env,
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        node = WorkerNode(name, home, temp, log, proc, _namespace_init(proc.pid, 2))
        self.workers.append(node)
        if wait:
            self.wait_for(node)
        return node

    def wait_for(self, node: WorkerNode, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = node.log.read_text(errors="replace")
            if "Ray runtime started" in text:
                return
            if node.proc.poll() is not None:
                raise RuntimeError(f"worker node {node.name} exited {node.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"worker node {node.name} did not start:\n{node.log.read_text(errors='replace')[-3000:]}")

    def kill(self, node: WorkerNode) -> None:
        """SIGKILL the node's PID namespace: every process of that node ends at once, as a lost machine's."""
        os.kill(node.init, signal.SIGKILL)
        node.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while node.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        node.killed = True

    def stop(self) -> None:
        """End every process of the cluster (the namespace's first process exits: the kernel kills the rest)."""
        if self.init is None:
            return
        if self.init.poll() is None:
            with_pid = self.init_pid
            try:
                os.kill(with_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.init.stdin.close()
            self.init.wait(timeout=60)
        for proc in [*(node.proc for node in self.workers), *self.servers]:
            if proc.poll() is None:
                proc.wait(timeout=30)
        self.init = None


def cluster_root(tmp_path_factory) -> Path:
    """The cluster's folder under pytest's base folder (the nodes' HOMEs, temp dirs and logs; the driver's side)."""
    return tmp_path_factory.mktemp("rc")
