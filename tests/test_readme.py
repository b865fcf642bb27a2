"""The READMEs' command lines: the Chinese one shows only commands the English one shows, and every command line in
the READMEs and docs/ is accepted by the CLI's own parser (nothing is executed), so the texts cannot drift from the
tool or from each other.

What counts as a command line: each line of a ``bash``/``text``/``sh``/``console`` code block that starts with
``mhsa-patch `` (each ``&&`` part of a chained line; a ``#`` comment stripped), and each inline code span
`` `mhsa-patch ...` `` in the prose. An inline span of the command name alone (`` `mhsa-patch check` ``) names the
command: the command must exist. Usage syntax is expanded into every concrete form it allows: each alternative of
``[A | B]`` and of ``X|Y``, optional groups ``[...]`` taken, ``[...]`` (more options) dropped.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from mhsa_patch.cli import app

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\s*$")
INLINE = re.compile(r"`(mhsa-patch [^`]+)`")


def command_lines(path: Path) -> list[str]:
    """Every ``mhsa-patch ...`` command in the bash/text code blocks of a Markdown file, comments stripped.

    A line chained with ``&&`` gives each of its ``mhsa-patch`` parts (the quick start's first line)."""
    found, lang = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if m:
            lang = None if lang is not None else (m.group(1) or "text")
            continue
        if lang is None:  # prose: its inline code spans
            found.extend(" ".join(span.split()) for span in INLINE.findall(line))
            continue
        if lang not in ("bash", "text", "sh", "console"):
            continue
        for part in line.split("&&"):
            part = part.split(" #", 1)[0].strip()
            if part.startswith("mhsa-patch "):
                found.append(" ".join(part.split()))
    return found


def normalise(line: str) -> list[str]:
    """Usage syntax to one concrete argument list: ``[A | B]`` -> A, ``X|Y`` -> X, ``[...]`` dropped, brackets off."""
    line = line.replace("[...]", "")
    while True:  # innermost alternatives first: [--target PATH | --python PATH] -> [--target PATH]
        new = re.sub(r"\[([^\[\]|]*?)\s*\|[^\[\]]*?\]", r"[\1]", line)
        if new == line:
            break
        line = new
    line = line.replace("[", " ").replace("]", " ")
    args = shlex.split(line)[1:]  # drop "mhsa-patch"
    return [a.split("|", 1)[0] if "|" in a and not a.startswith("-") else a for a in args]


def variants(line: str) -> list[list[str]]:
    """Every concrete argument list a usage line allows: each alternative of each ``[A | B]`` and ``X|Y``."""
    m = re.search(r"\[([^\[\]]*\|[^\[\]]*)\]", line)  # an innermost group with alternatives
    if m:
        return [v for alt in m.group(1).split("|") for v in variants(line[: m.start()] + f"[{alt.strip()}]" + line[m.end():])]
    out = [[]]
    for arg in normalise(line.replace("|", "\0")):  # normalise must not pick: \0 stands for | in a token
        alts = arg.split("\0") if "\0" in arg and not arg.startswith("-") else [arg.replace("\0", "|")]
        out = [[*o, a] for o in out for a in alts]
    return out


READMES = {"en": ROOT / "README.md", "zh-CN": ROOT / "README.zh-CN.md"}
DOCS = sorted((ROOT / "docs").glob("*.md"))
ALL_LINES = sorted({(p.relative_to(ROOT).as_posix(), ln) for p in [*READMES.values(), *DOCS] for ln in command_lines(p)})


def test_the_readmes_link_each_other():
    en, zh = (p.read_text(encoding="utf-8") for p in READMES.values())
    assert "(README.zh-CN.md)" in "\n".join(en.splitlines()[:5])
    assert "(README.md)" in "\n".join(zh.splitlines()[:5])


def test_the_chinese_readme_shows_only_commands_of_the_english_one():
    en, zh = set(command_lines(READMES["en"])), set(command_lines(READMES["zh-CN"]))
    # a Chinese line is covered by an English one with the same command and at least its options
    shown = [(args[0], {a for a in args if a.startswith("-")}) for ln in en for args in variants(ln)]
    uncovered = [
        ln for ln in zh for args in variants(ln)
        if not any(args[0] == name and {a for a in args if a.startswith("-")} <= opts for name, opts in shown)
    ]
    assert len(zh) >= 8 and not uncovered, uncovered
    # the quick start and the everyday commands are all there
    for cmd in ("apply", "revert", "status", "gen-yaml", "check", "port-weights"):
        assert any(ln.split()[1] == cmd for ln in zh), cmd


def test_the_quick_start_is_unchanged():
    text = READMES["en"].read_text(encoding="utf-8")
    assert "\npip install '.[test]' && python -m pytest -n 2\n" in text  # CI runs this line exactly (.ci/run)
    assert "pip install . && mhsa-patch apply && mhsa-patch gen-yaml --scale n && mhsa-patch check yolov8n-MHSA.yaml" in text


@pytest.mark.parametrize("where,line", ALL_LINES, ids=[f"{w}:{ln}" for w, ln in ALL_LINES])
def test_every_documented_command_line_parses(where, line):
    group = typer.main.get_command(app)
    for args in variants(line):
        name, rest = args[0], args[1:]
        assert name in group.commands, f"{where}: unknown command in {line!r}"
        if not rest and line == f"mhsa-patch {name}":  # the command named in prose, or run bare: it exists
            continue
        cmd = group.commands[name]
        with cmd.make_context(name, list(rest), resilient_parsing=False) as ctx:  # parses; nothing runs
            assert ctx.command is cmd, args


def test_normalise_handles_usage_syntax():
    assert normalise("mhsa-patch apply [--target PATH | --python PATH] [--force] [--dry-run]") == [
        "apply", "--target", "PATH", "--force", "--dry-run"
    ]
    assert normalise("mhsa-patch check MODEL.yaml|MODEL.pt [...]") == ["check", "MODEL.yaml"]
    assert normalise("mhsa-patch check MODEL.yaml [--train [--train-imgsz 128] [--epochs 1]]") == [
        "check", "MODEL.yaml", "--train", "--train-imgsz", "128", "--epochs", "1"
    ]
    assert variants("mhsa-patch status [--target PATH | --python PATH] [--json]") == [
        ["status", "--target", "PATH", "--json"], ["status", "--python", "PATH", "--json"]
    ]
    assert variants("mhsa-patch check MODEL.yaml|MODEL.pt [...]") == [["check", "MODEL.yaml"], ["check", "MODEL.pt"]]


def test_inline_command_lines_are_read_too(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("Run `mhsa-patch apply --dry-run` first, see `mhsa-patch status`.\n```bash\nmhsa-patch revert\n```\n")
    assert command_lines(md) == ["mhsa-patch apply --dry-run", "mhsa-patch status", "mhsa-patch revert"]


# -- facts both READMEs state: the layers apply inserts and the files it changes ---------------------------------------

APPLY_SECTION = {"en": "## What `apply` changes", "zh-CN": "## `apply` 改了什么"}
BACKTICKED = re.compile(r"`([^`]+)`")


def apply_section(lang: str) -> tuple[str, list[list[str]]]:
    """The "what apply changes" section of a README: its prose before the table, and the table's rows as cells."""
    text = READMES[lang].read_text(encoding="utf-8")
    assert APPLY_SECTION[lang] in text, f"{lang}: no {APPLY_SECTION[lang]!r} section"
    section = text.split(APPLY_SECTION[lang], 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[start:] if ln.startswith("| `")]
    return "\n".join(lines[:start]), rows


def names_in(cell: str) -> set[str]:
    """The class names a cell shows in code spans (`MHSA`, `"BoT3"`), not code such as `from .conv import (...)`."""
    return {t.strip('"') for t in BACKTICKED.findall(cell) if re.fullmatch(r'"?[A-Z][A-Za-z0-9_]*"?', t)}


@pytest.mark.parametrize("lang", list(READMES))
def test_the_readmes_list_the_files_apply_changes(lang):
    from mhsa_patch.patching.target import TARGET_FILES

    _, rows = apply_section(lang)
    assert [BACKTICKED.findall(row[0])[0] for row in rows] == list(TARGET_FILES)


@pytest.mark.parametrize("lang", list(READMES))
def test_the_readmes_list_the_layers_apply_inserts(lang):
    from mhsa_patch.patches import LAYERS, layer_names

    prose, rows = apply_section(lang)
    helpers = {h for spec in LAYERS for h in spec.helpers}
    for row in rows:  # every file's edit names every layer, and nothing else
        assert names_in(" ".join(row[1:])) == set(layer_names()), (lang, row)
    shown = [t for t in BACKTICKED.findall(prose) if t in set(layer_names()) | helpers]
    first = list(dict.fromkeys(t for t in shown if t not in helpers))
    assert first == list(layer_names()), (lang, shown)  # in the order apply inserts them
    assert set(shown) - set(layer_names()) <= helpers


def test_the_quick_start_notes_give_the_same_figures():
    """Test count, time, downloads and cache size: every figure of the English quick start is in the Chinese one."""
    def quick_start(lang: str) -> str:
        text = READMES[lang].read_text(encoding="utf-8")
        return text.split("\n## ", 2)[1]  # the first section after the title: the quick start

    en, zh = quick_start("en"), quick_start("zh-CN")
    figures = set(re.findall(r"\b(\d+ (?:MB|GB|tests|minutes|ultralytics wheels))\b", en))
    assert len(figures) >= 5, figures
    units = {"tests": "个测试", "minutes": "分钟", "ultralytics wheels": "个 ultralytics wheel"}
    for figure in figures:
        number, unit = figure.split(" ", 1)
        assert f"{number} {units.get(unit, unit)}" in zh, figure
