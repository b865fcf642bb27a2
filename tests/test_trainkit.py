"""Issue 22 A.7: the training-side tests get their model YAMLs from the ``gen-yaml`` command, never from the library
behind it, so a broken command line fails them instead of going unnoticed."""

from __future__ import annotations

import shutil

import pytest

import releases
import trainkit
from helpers import ROOT, checkout_env


def test_gen_yaml_goes_through_the_command_line(tmp_path):
    site = releases.copy_release(releases.LATEST, tmp_path / "site").parent
    made = trainkit.gen_yaml(site, tmp_path / "ok")
    assert made.name == "yolov8n-MHSA.yaml" and "MHSA" in made.read_text()
    # a checkout whose command line lost gen-yaml (its registration dropped): the helper fails, it does not fall back
    broken = tmp_path / "checkout"
    for name in ("mhsa_patch", "patches"):
        shutil.copytree(ROOT / name, broken / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", broken)
    cli_init = broken / "mhsa_patch" / "cli" / "__init__.py"
    text = cli_init.read_text()
    assert text.count('("gen-yaml", gen_yaml.gen_yaml),') == 1
    cli_init.write_text(text.replace('("gen-yaml", gen_yaml.gen_yaml),', ""))
    env = {"PYTHONPATH": checkout_env(site, checkout=broken, offline=False)["PYTHONPATH"]}
    with pytest.raises(AssertionError, match="No such command 'gen-yaml'|no such command 'gen-yaml'"):
        trainkit.gen_yaml(site, tmp_path / "broken", env_extra=env)
    assert not (tmp_path / "broken").exists() or not list((tmp_path / "broken").iterdir())
