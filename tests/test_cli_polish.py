"""CLI polish found by trying the tool as a new user (issue 10 C): help text, placeholders, dry runs, .gitignore."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer

import releases
from helpers import cli
from mhsa_patch.cli import app

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("apply", "revert", "status", "gen-yaml", "check", "port-weights", "ablate")


def test_every_command_has_a_one_sentence_summary():
    """The top-level help shows each command's first paragraph: one short sentence, on one line of the listing."""
    group = typer.main.get_command(app)
    assert sorted(group.commands) == sorted(COMMANDS)
    for name, cmd in group.commands.items():
        first = cmd.help.strip().split("\n\n")[0]
        assert "\n" not in first and first.endswith(".") and first.count(". ") == 0, (name, first)
        assert len(first) <= 50, (name, first)  # fits the help table's column next to the names, unbroken
    r = cli("--help")
    assert r.exit_code == 0
    for name in COMMANDS:
        line = next(ln for ln in r.stdout.splitlines() if f" {name} " in ln)
        summary = group.commands[name].help.strip().split("\n\n")[0]
        assert summary in line, line


@pytest.mark.parametrize("command,metavars", [("check", ["MODEL"]), ("port-weights", ["SRC", "MODEL"])])
def test_arguments_show_upper_case_placeholders(command, metavars):
    r = cli(command, "--help")
    assert r.exit_code == 0
    assert "{model}" not in r.stdout and "{src}" not in r.stdout
    usage = next(ln for ln in r.stdout.splitlines() if "Usage:" in ln)
    for mv in metavars:
        assert mv in usage, usage
    cmd = typer.main.get_command(app).commands[command]
    assert [p.metavar for p in cmd.params if p.param_type_name == "argument"] == metavars


def test_revert_dry_run_on_an_unpatched_install_says_nothing_to_do(latest_pkg):
    real = cli("revert", "-t", str(latest_pkg))
    dry = cli("revert", "--dry-run", "-t", str(latest_pkg))
    assert real.exit_code == dry.exit_code == 0
    assert "nothing to do: MHSA, BoT3 not applied" in real.stdout
    assert "nothing to do: MHSA, BoT3 not applied" in dry.stdout and "nothing was written" in dry.stdout
    assert "0 files" not in dry.stdout + dry.stderr and "---" not in dry.stdout
    # and the same for a second apply
    assert cli("apply", "-t", str(latest_pkg)).exit_code == 0
    applied = releases.tree_bytes(latest_pkg)
    dry = cli("apply", "--dry-run", "-t", str(latest_pkg))
    assert dry.exit_code == 0 and "nothing to do: MHSA, BoT3 already applied" in dry.stdout
    assert "0 files" not in dry.stdout + dry.stderr
    assert releases.tree_bytes(latest_pkg) == applied


def test_gitignore_covers_the_quick_start_outputs_at_the_root_only():
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "/*-MHSA.yaml" in lines and "/*-BoT3.yaml" in lines
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        r = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
        return r.returncode == 0

    assert ignored("yolov8n-MHSA.yaml") and ignored("yolo11s-seg-BoT3.yaml")
    assert not ignored("examples/yolov8n-MHSA.yaml") and not ignored("tests/data/yolov8n-BoT3.yaml")
