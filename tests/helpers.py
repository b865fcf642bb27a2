"""Helpers every test module shares: the CLI in-process, the one-line refusal check, layer-list arithmetic."""

from __future__ import annotations

from typer.testing import CliRunner

from mhsa_patch.cli import app

runner = CliRunner()


def cli(*args: str):
    """``mhsa-patch args...`` in-process (``typer.testing.CliRunner``); stdout and stderr apart."""
    return runner.invoke(app, list(args))


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
