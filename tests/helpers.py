"""Helpers every test module shares: the CLI in-process and in a subprocess, the environment of a subprocess that
runs this checkout, the one-line refusal check, release copies compared, layer-list arithmetic, gen-yaml's rows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

import releases
from mhsa_patch.cli import app
from mhsa_patch.modelyaml import bases
from mhsa_patch.patching.target import find_target

ROOT = Path(__file__).resolve().parent.parent  # this checkout

runner = CliRunner()


def cli(*args: str):
    """``mhsa-patch args...`` in-process (``typer.testing.CliRunner``); stdout and stderr apart."""
    return runner.invoke(app, list(args))


def gen_yaml(*args: str):
    """``mhsa-patch gen-yaml args...`` in-process."""
    return cli("gen-yaml", *args)


def checkout_env(site: Path | None = None, *, checkout: Path = ROOT, offline: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that imports this checkout's ``mhsa_patch`` (``checkout`` first on
    PYTHONPATH), and with ``site`` the ultralytics under it (``releases.release_env``; ``offline=False`` for a run of
    the tool, which must set YOLO_OFFLINE for its children itself). ``extra`` goes on top."""
    env = releases.release_env(site, offline=offline) if site is not None else dict(os.environ)
    if not offline:
        env.pop("YOLO_OFFLINE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def run_tool(*args: str, site: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m mhsa_patch args...`` as a user runs it, in a fresh interpreter (text, captured): this checkout's
    code whatever ``cwd`` is, in ``env`` (default: ``checkout_env(site, offline=False)``)."""
    return subprocess.run(
        [sys.executable, "-m", "mhsa_patch", *args],
        env=env if env is not None else checkout_env(site, offline=False),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def unchanged(pkg: Path, version: str = releases.LATEST) -> bool:
    """Whether a copy of a release is byte for byte the release again."""
    return releases.tree_bytes(pkg) == releases.tree_bytes(releases.pristine(version))


def assert_refused(r, *needles: str, code: int = 1) -> str:
    """A refusal: exit ``code``, exactly one ``ERROR ❌`` line on stderr holding every needle, no traceback.

    Takes a ``CliRunner`` result or a ``subprocess.CompletedProcess``; returns the line.
    """
    exit_code = r.exit_code if hasattr(r, "exit_code") else r.returncode
    stdout = r.stdout or ""
    assert exit_code == code, stdout + (r.stderr or "")
    assert "Traceback" not in stdout + (r.stderr or "")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR ❌"), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def absolute(f, i: int) -> list[int]:
    """The absolute indices a layer at index ``i`` reads (``from`` may be an int or a list, relative or absolute)."""
    return [x if x >= 0 else i + x for x in ([f] if isinstance(f, int) else f)]


def without_row(froms: list, index: int) -> list:
    """Undo an insertion, independently of the tool: the ``from`` of every other row once row ``index`` (which reads
    ``-1``) is dropped, its readers sent to its input and later rows renumbered. Returns one ``from`` per kept row."""
    after = index - 1
    out = []
    for k, f in enumerate(froms):
        if k == index:
            continue
        old_k = k if k < index else k - 1
        fs = []
        for x in [f] if isinstance(f, int) else f:
            b = x if x >= 0 else k + x
            a = after if b == index else (b if b < index else b - 1)
            fs.append(a - old_k if x < 0 else a)
        out.append(fs[0] if isinstance(f, int) else fs)
    return out


def fork_bot3_yaml(mhsa_yaml: str, nc: int = 3) -> str:
    """A fork's ``yolov8-BoT3.yaml`` written from gen-yaml's MHSA YAML: BoT3 added after SPPF as an extra layer (its
    readers renumbered as gen-yaml renumbered MHSA's), ``[-1, 1, BoT3, [1024]]``, and ``nc`` classes."""
    import re

    text, n = re.subn(r"\[-1, 1, MHSA, \[[^\]]*\]\]", "[-1, 1, BoT3, [1024]]", mhsa_yaml)
    assert n == 1, "gen-yaml's MHSA row not found"
    text, n = re.subn(r"(?m)^nc: \d+", f"nc: {nc}", text)
    assert n == 1, "no nc line"
    return text


# -- gen-yaml's rows --------------------------------------------------------------------------------------------------

ROW = re.compile(r"^\s*- \[.*\](\s+#.*)?$")  # one layer row on one line, as the configs write them


def release_target(version: str):
    """The target of a release's pristine copy (read only)."""
    return find_target(releases.pristine(version))


def base_layers(version: str, base: str = "yolov8", task: str = "detect") -> tuple[dict, str]:
    """A release's own base config: (parsed, text)."""
    path = bases.base_config(release_target(version), base, task)
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text), text


def layers(d: dict) -> list:
    return d["backbone"] + d["head"]


def strip_mhsa(new: list, mhsa: int) -> list:
    """Undo the insertion independently of the generator: drop row ``mhsa``, send its readers to its input, renumber."""
    assert new[mhsa][2] == "MHSA" and new[mhsa][0] == -1
    kept = [row for k, row in enumerate(new) if k != mhsa]
    return [[f, *row[1:]] for f, row in zip(without_row([r[0] for r in new], mhsa), kept)]


def readers_of(rows: list, index: int) -> list[int]:
    return [k for k, r in enumerate(rows) if index in absolute(r[0], k)]


def assert_imports_neither_torch_nor_ultralytics(code: str, *args: str) -> None:
    """Run ``python -c code args...`` in a fresh interpreter, then check that it imported neither torch nor
    ultralytics (the tool's own work never needs them: only its children import them)."""
    check = "\nbad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics'))\nassert not bad, bad\n"
    r = subprocess.run([sys.executable, "-c", "import sys\n" + code + check, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
