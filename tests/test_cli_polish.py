"""CLI polish found by trying the tool as a new user (issue 10 C, issue 15 A-C): help text, placeholders, dry runs,
.gitignore, gen-yaml run twice and its default names, usage errors, plain-word errors, output that reads well piped."""

from __future__ import annotations

import ast
import fnmatch
import itertools
import re
import subprocess
from pathlib import Path

import pytest
import typer

import releases
import trainkit
from helpers import assert_refused, cli
from mhsa_patch.cli import app
from mhsa_patch.cli.options import apply_command
from mhsa_patch.modelyaml import naming
from mhsa_patch.modelyaml.request import BASES, SCALES, TASKS, Request, command_line

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
    assert "/*-MHSA.yaml" in lines and "/*-BoT3.yaml" in lines and "/*-MHSA-*.yaml" in lines
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        r = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
        return r.returncode == 0

    assert ignored("yolov8n-MHSA.yaml") and ignored("yolo11s-seg-BoT3.yaml")
    assert not ignored("examples/yolov8n-MHSA.yaml") and not ignored("tests/data/yolov8n-BoT3.yaml")


# -- issue 15 A: the quick start twice, default names ----------------------------------------------------------------


def test_gen_yaml_twice_says_unchanged_and_a_changed_file_is_refused_with_both_ways_out(
    latest_pkg, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    first = cli("gen-yaml", "--scale", "n", "-t", str(latest_pkg))
    assert first.exit_code == 0, first.output
    out = tmp_path / "yolov8n-MHSA.yaml"
    data, stat = out.read_bytes(), out.stat()
    again = cli("gen-yaml", "--scale", "n", "-t", str(latest_pkg))
    assert again.exit_code == 0, again.output
    assert f"unchanged {out}" in again.stdout and "wrote" not in again.stdout
    assert out.read_bytes() == data and out.stat().st_mtime_ns == stat.st_mtime_ns  # not even rewritten
    out.write_bytes(data + b"# my note\n")
    line = assert_refused(cli("gen-yaml", "--scale", "n", "-t", str(latest_pkg)), "differs", "--force", "-o NAME")
    assert str(out) in line and out.read_bytes().endswith(b"# my note\n")
    # the quick start's neighbour: several insertion points get their own file, the first one stays
    r = cli("gen-yaml", "--scale", "n", "--at", "P3,P4,P5", "-t", str(latest_pkg))
    assert r.exit_code == 0 and (tmp_path / "yolov8n-MHSA-P3P4P5.yaml").is_file(), r.output
    assert out.read_bytes().endswith(b"# my note\n")


def _requests():
    """Every option combination gen-yaml takes (both layers, every base, task and scale; --at, --heads, --pos-emb at
    two sizes, --lateral, --channels)."""
    ats = (None, "P3", "P4", "P3,P4,P5", "P4,P5", "SPPF", "6", "6,9")
    for scale, base, task in itertools.product(SCALES, BASES, TASKS):
        yield Request(scale=scale, base=base, task=task, layer="BoT3")
        for at, heads, pos, imgsz, lateral in itertools.product(ats, (4, 8), (False, True), (640, 320),
                                                                  ("attention", "pre-attention")):
            if imgsz != 640 and not pos:
                continue  # --imgsz changes nothing without --pos-emb
            yield Request(scale=scale, base=base, task=task, at=at, heads=heads, pos_emb=pos, imgsz=imgsz,
                          lateral=lateral)
    for channels in (None, "256", "64,128,256"):
        yield Request(scale="s", from_yaml="my-model.yaml", at="P3,P4,P5" if channels != "256" else None,
                      channels=channels)


def test_every_option_combination_gets_a_distinct_default_name_that_carries_its_scale_and_is_ignored():
    patterns = [ln[1:] for ln in (ROOT / ".gitignore").read_text().splitlines() if ln.startswith("/") and "yaml" in ln]
    names: dict[str, str] = {}
    for req in _requests():
        name = naming.output_name(req)
        command = command_line(req)
        # SPPF and P5 are the same layer in yolov8: the same file under two names is fine, one name for two files not
        assert names.setdefault(name, command) == command, (name, command, names[name])
        if req.from_yaml is None:
            assert naming.guess_scale(name) == req.scale, name  # ultralytics reads the scale the file builds
            assert naming.unified_path(name) == name.replace(f"{req.base}{req.scale}", req.base, 1), name
        assert any(fnmatch.fnmatchcase(name, p) for p in patterns), name
    assert len(names) > 1000
    assert naming.output_name(Request(scale="n")) == "yolov8n-MHSA.yaml"  # the quick start's name is kept
    assert naming.output_name(Request(scale="n", at="P3,P4,P5")) == "yolov8n-MHSA-P3P4P5.yaml"
    if (ROOT / ".git").exists():  # git itself agrees, on a sample
        sample = sorted(names)[::97]
        r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(sample),
                           capture_output=True, text=True)
        assert sorted(r.stdout.split()) == sample


# -- issue 15 B: usage errors, plain words, help placeholders ------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["gen-yaml", "--scale", "q"], "unknown scale 'q'"),
        (["gen-yaml", "--scale", "n", "--layer", "Foo"], "unknown layer 'Foo'"),
        (["gen-yaml", "--scale", "n", "--at", "P7"], "--at P7: no backbone layer at stride 128"),
        (["gen-yaml", "--scale", "n", "--imgsz", "0"], "--imgsz must be a positive integer"),
        (["gen-yaml"], "missing option '--scale'"),
        # click's words, or typer 0.29's (it checks values with pydantic)
        (["gen-yaml", "--scale", "n", "--heads", "abc"], ("'abc' is not a valid int", "'--heads': Input should be a valid integer")),
        (["check"], "missing argument 'MODEL'"),
        (["check", "m.yaml", "--imgsz", "0"], ("'--imgsz': 0 is not in the range", "'--imgsz': Input should be greater than or equal to 64")),
        (["check", "m.yaml", "--imgsz", "100"], "--imgsz 100: must be a multiple of 32"),
        (["status", "--bogus"], ("no such option: --bogus", "no such option '--bogus'")),
        (["frobnicate"], "no such command 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(latest_pkg, tmp_path, monkeypatch, args, needle):
    """Missing options (found by click) and bad values (found by the tool) read the same: one line, exit 2. A needle
    given as a tuple is the same error in the words of another typer or click release: one of them is in the line."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "m.yaml").write_text("nc: 80\n")
    target = ["-t", str(latest_pkg)] if len(args) > 1 and args[0] in ("gen-yaml", "check") else []
    line = assert_refused(cli(*args, *target), code=2)
    assert line.startswith("ERROR ❌ usage: ")
    assert any(n in line for n in (needle if isinstance(needle, tuple) else (needle,))), line
    assert [p.name for p in work.iterdir()] == ["m.yaml"]


def test_files_that_are_not_what_they_should_be_are_named_in_plain_words(latest_pkg, tmp_path):
    from mhsa_patch.child.safe_load import CheckpointRefused, unpickle

    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes([72, 3, 250, 7]) * 64)  # torch.load's own words for this: "KeyError: 72"
    with pytest.raises(CheckpointRefused) as e:
        unpickle(noise)
    assert "neither a zip nor a pickle file (truncated, or another format)" in str(e.value)
    assert "KeyError" not in str(e.value)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    assert_refused(cli("check", str(binary), "-t", str(latest_pkg)), "bin.yaml: not UTF-8 text (byte 0)")
    folder = tmp_path / "models.yaml"
    folder.mkdir()
    assert_refused(cli("check", str(folder), "-t", str(latest_pkg)), f"{folder} is a folder")


def test_unpatched_check_and_gen_yaml_check_suggest_the_same_shortest_apply(latest_pkg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("gen-yaml", "-s", "n", "-t", str(latest_pkg)).exit_code == 0
    want = f"run 'mhsa-patch apply --target {latest_pkg}' first"  # the copy was named: the command names it too
    assert_refused(cli("check", "yolov8n-MHSA.yaml", "-t", str(latest_pkg)), want)
    assert_refused(cli("gen-yaml", "-s", "n", "--check", "--force", "-t", str(latest_pkg)), want)
    assert apply_command(None, None) == "mhsa-patch apply"  # the default copy: nothing to add
    assert apply_command(None, "/opt/conda/bin/python") == "mhsa-patch apply --python /opt/conda/bin/python"
    assert apply_command("my dir/site", None) == "mhsa-patch apply --target 'my dir/site'"


def test_one_reader_is_singular(latest_pkg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("gen-yaml", "-s", "n", "--layer", "BoT3", "-t", str(latest_pkg))
    assert r.exit_code == 0 and "read by layer 9\n" in r.stdout and "layers 9" not in r.stdout
    r = cli("gen-yaml", "-s", "n", "-t", str(latest_pkg))
    assert "read by layers 11, 21" in r.stdout


USAGE_TAIL = {"check": "[OPTIONS] MODEL", "port-weights": "[OPTIONS] SRC MODEL", "ablate": "[OPTIONS] [-- key=value ...]"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_shows_real_placeholders(command):
    """The tool's placeholders are real on every typer: the usage line names the arguments as ``MODEL``, ``SRC MODEL``
    and ``[-- key=value ...]`` (never typer's ``{MODEL}``, nor typer 0.29's ``[[-- key=value ...]]...``), and every
    option that takes a value shows its metavar (``PATH``, ``N``, ``P3,P4,P5``), never a type such as ``<int>``.
    The type column typer draws beside an argument's name (``<str>``; from typer 0.29 ``<bool>`` beside a flag too)
    is typer's own: no public API of typer 0.29 hides it."""
    r = cli(command, "--help")
    assert r.exit_code == 0
    usage = next(ln for ln in r.stdout.splitlines() if "Usage:" in ln).strip()
    assert usage.endswith(f" {command} {USAGE_TAIL.get(command, '[OPTIONS]')}"), usage
    cmd = typer.main.get_command(app).commands[command]
    arguments = [p.metavar for p in cmd.params if p.param_type_name == "argument"]
    for line in r.stdout.splitlines():
        assert not re.search(r"\{[A-Za-z_ ]+\}", line), line
        for tag in re.findall(r"<([^<>\s]+)>", line):
            # an argument's type (its row starts with its metavar), or a flag's: never an option's missing metavar
            assert tag == "bool" or (tag in ("str", "list[str]") and any(f" {a} " in line for a in arguments)), line
    for p in cmd.params:
        if p.param_type_name == "option" and not p.is_flag:
            assert p.metavar and p.metavar == p.metavar.strip(), (command, p.name)
    if command == "gen-yaml":
        assert "P3,P4,P5" in r.stdout and "PATH" in r.stdout and " N " in r.stdout


def dotted(node) -> str:
    """``typer.core._click`` for the attribute chain of that expression ('' when it does not start at a name)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def test_the_command_line_uses_public_typer_and_click_only():
    """Issue 22 C: no private module or attribute of typer or click anywhere in the command line (``typer.core._click``
    stopped the tool at import on typer 0.29): imports, attribute chains and ``getattr(module, "_name")``. CI runs the
    command-line tests on the newest typer and on the oldest pyproject.toml allows."""
    def private(name: str) -> bool:
        parts = name.split(".")
        return parts[0] in ("typer", "click") and any(p.startswith("_") and not p.startswith("__") for p in parts[1:])

    found = []
    for path in sorted((ROOT / "mhsa_patch" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [dotted(node)]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2:
                if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    names = [f"{dotted(node.args[0])}.{node.args[1].value}"]
            found += [f"{path.name}:{node.lineno}: {n}" for n in names if private(n)]
    assert not found, found


# -- issue 15 C: output that reads well piped ----------------------------------------------------------------------


def test_status_keeps_each_piece_on_one_line_and_names_each_class(latest_pkg):
    assert cli("apply", "-t", str(latest_pkg)).exit_code == 0
    r = cli("status", "-t", str(latest_pkg))
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    pieces = [ln.strip() for ln in lines if ln.startswith("  ")]
    assert pieces and all(re.fullmatch(r"\S+ \S+ +marked", p) for p in pieces), pieces
    labels = [re.split(r" {2,}", p)[0] for p in pieces]
    assert labels.count("BoT3 class") == 1 and labels.count("BottleneckTransformer class") == 1
    assert all(len(ln) <= 80 for ln in lines[1:]), lines  # the header holds the path; pieces fit 80 columns
    st = cli("status", "--json", "-t", str(latest_pkg))
    names = [p["name"] for f in __import__("json").loads(st.stdout)["files"].values() for p in f["pieces"]]
    assert {"MHSA", "BoT3", "BottleneckTransformer"} <= set(names)


def test_lint_line_marks_width_and_height_unused_without_pos_emb(latest_pkg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli("gen-yaml", "-s", "n", "-t", str(latest_pkg))
    cli("gen-yaml", "-s", "n", "--pos-emb", "-t", str(latest_pkg))
    plain = cli("check", "yolov8n-MHSA.yaml", "--lint-only", "-t", str(latest_pkg))
    assert "width=14, height=14, heads=4, pos_emb=False) on 20×20 (P5/32), width and height unused without pos_emb" \
        in plain.stdout
    pos = cli("check", "yolov8n-MHSA-pos640.yaml", "--lint-only", "-t", str(latest_pkg))
    assert pos.exit_code == 0 and "pos_emb=True) on 20×20" in pos.stdout and "unused" not in pos.stdout


@pytest.mark.training
def test_check_train_piped_to_a_file_is_plain_and_shows_one_line_per_epoch(tmp_path):
    p = trainkit.patched()
    log = tmp_path / "log.txt"
    args = ["check", str(p["yaml"]), "--train", "--imgsz", "64", "--runs", "1", "--train-imgsz", "32",
            "--images", "4", "--batch", "2", "--epochs", "2", "--target", str(p["site"])]
    with open(log, "w") as f:  # stdout is a file, as in `check --train > log.txt`
        proc = subprocess.run([__import__("sys").executable, "-m", "mhsa_patch", *args],
                              env=trainkit.env(p["site"]), stdout=f, stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = log.read_bytes().decode("utf-8")
    assert "\x1b" not in text and "\r" not in text, text
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr
    epochs = re.findall(r"^    epoch (\d+)/2: box_loss [\d.]+, cls_loss [\d.]+, dfl_loss [\d.]+", text, re.M)
    assert epochs == ["1", "2"], text
    assert text.count("GFLOPs  module") == 1  # the layer table, once
    assert "Starting training" not in text and "Epoch    GPU_mem" not in text  # ultralytics' own log: --verbose
    assert len(text.splitlines()) < 50


def test_the_childs_log_is_copied_plain_when_it_goes_to_a_file():
    """check --verbose (and port-weights) piped: ultralytics' colours and redrawn progress bars become plain lines."""
    from mhsa_patch.child.launch import plain

    bar = "\r  1/2 50% ━━━━━━      \r  2/2 100% ━━━━━━━━━━━━ 0.3s\n"
    assert plain(bar) == "  2/2 100% ━━━━━━━━━━━━ 0.3s"
    assert plain("\x1b[34m\x1b[1mtrain: \x1b[0mScanning ... 4 images\n") == "train: Scanning ... 4 images"
    assert plain("\r\n") == ""
