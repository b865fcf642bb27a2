"""Issue 9 D: every child of the tool stays off the network (check, check --train, gen-yaml --check, port-weights).

A ``sitecustomize.py`` put first on PYTHONPATH records every connect and name lookup (and refuses it) in the tool
and in every child that inherits the path; the children's own guard (mhsa_patch.child.offline) records attempts made
after ultralytics' import in the same file. The file must stay empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import releases
import trainkit
from helpers import checkout_env

pytestmark = pytest.mark.training

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


def guarded(tmp_path: Path) -> tuple[dict[str, str], Path]:
    hook = tmp_path / "nethook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "net.log"
    log.touch()
    env = {
        "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MHSA_TEST_NETLOG": str(log),
        "MHSA_PATCH_NETLOG": str(log),
    }
    return env, log


def cli(env: dict[str, str], *args: str, site: Path, cwd: Path | None = None):
    # the hook first on PYTHONPATH, then this checkout and the site; no YOLO_OFFLINE from the test: the tool must
    # set it itself (trainkit.cli runs the tool with offline=False)
    path = os.pathsep.join([env["PYTHONPATH"], checkout_env(site, offline=False)["PYTHONPATH"]])
    return trainkit.cli(*args, site=site, env_extra={**env, "PYTHONPATH": path}, timeout=900, cwd=cwd)


def assert_offline(log: Path, proc) -> None:
    trainkit.ok(proc)
    started = Path(str(log) + ".pids")
    processes = [line.split() for line in started.read_text().splitlines()]
    started.write_text("")  # the next run's processes only
    assert len(processes) >= 2, f"the tool's child did not inherit PYTHONPATH (processes hooked: {processes})"
    assert log.read_text() == "", f"network access attempted:\n{log.read_text()}"
    # the tool was started without YOLO_OFFLINE, and every child it started had it: the tool set it
    (_, tool), *children = processes
    assert tool == "-" and all(offline == "1" for _, offline in children), processes


def test_check_and_check_train_stay_offline(tmp_path):
    kit = trainkit.patched()
    env, log = guarded(tmp_path)
    assert_offline(log, cli(env, "check", str(kit["yaml"]), "--imgsz", "64", "--runs", "1", "--target", str(kit["site"]), site=kit["site"]))
    assert_offline(
        log,
        cli(env, "check", str(kit["yaml"]), "--train", "--imgsz", "64", "--runs", "1", "--images", "4", "--batch", "2",
            "--train-imgsz", "64", "--target", str(kit["site"]), site=kit["site"]),
    )


def test_gen_yaml_check_and_port_weights_stay_offline(tmp_path):
    kit = trainkit.patched()
    env, log = guarded(tmp_path)
    out = tmp_path / "yaml"
    out.mkdir()
    proc = cli(env, "gen-yaml", "--scale", "n", "--check", "--target", str(kit["site"]), site=kit["site"], cwd=out)
    assert_offline(log, proc)
    out_pt = tmp_path / "ported.pt"
    assert_offline(log, cli(env, "port-weights", str(kit["stock"]), str(kit["yaml"]), "-o", str(out_pt),
                            "--target", str(kit["site"]), site=kit["site"]))


def test_check_stays_offline_on_8_0_98(tmp_path):
    root = tmp_path / "r"
    site = releases.copy_release("8.0.98", root)
    trainkit.ok(trainkit.cli("apply", "--target", str(site), site=site))
    yaml_path = trainkit.gen_yaml(site, tmp_path / "y")
    env, log = guarded(tmp_path)
    assert_offline(log, cli(env, "check", str(yaml_path), "--imgsz", "64", "--runs", "1", "--train", "--images", "4",
                            "--batch", "2", "--train-imgsz", "64", "--target", str(site), site=site))
