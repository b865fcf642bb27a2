"""gen-yaml without building models: the text, the wiring, the scale, the options, bad input (fast, pure).

Every test reads the real model configs of the matrix releases (releases.pristine, never modified). Builds with
ultralytics are in test_yamlgen_builds.py.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

import releases
from helpers import ROW, assert_refused, base_layers, checkout_env, layers, readers_of, strip_mhsa
from helpers import gen_yaml as cli
from helpers import release_target as target
from mhsa_patch import __version__
from mhsa_patch.modelyaml import bases, naming, request
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.target import find_target
from mhsa_patch.modelyaml.emit import generate
from mhsa_patch.modelyaml.request import Request


# C = make_divisible(min(1024, max_channels) * width, 8), the channels at P5 (the table for yolov8)
C_P5 = {
    "yolov8": {"n": 256, "s": 512, "m": 576, "l": 512, "x": 640},
    "yolo11": {"n": 256, "s": 512, "m": 512, "l": 512, "x": 768},
    "yolo26": {"n": 256, "s": 512, "m": 512, "l": 512, "x": 768},
}
# what each release ships (base -> tasks)
SHIPS = {
    "8.0.98": {"yolov8": ("detect", "segment", "pose")},
    "8.0.239": {"yolov8": ("detect", "segment", "pose", "obb")},
    "8.2.103": {"yolov8": ("detect", "segment", "pose", "obb")},
    "8.3.150": {b: ("detect", "segment", "pose", "obb") for b in ("yolov8", "yolo11")},
    "8.4.190": {b: ("detect", "segment", "pose", "obb") for b in ("yolov8", "yolo11", "yolo26")},
}
SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}
HEAD = {"detect": "Detect", "segment": "Segment", "pose": "Pose", "obb": "OBB"}


def all_cases():
    for version, shipped in SHIPS.items():
        for base, tasks in shipped.items():
            for task in tasks:
                yield version, base, task


# -- the default: the tutorial's wiring -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", releases.MATRIX)
def test_default_is_the_tutorials_yolov8n(version):
    r = generate(target(version), Request(scale="n"))
    assert r.file_name == "yolov8n-MHSA.yaml"
    d = r.data
    assert d["scales"] == {"n": [0.33, 0.25, 1024]}
    assert len(d["backbone"]) == 11 and d["backbone"][10] == [-1, 1, "MHSA", [14, 14, 4]]
    assert d["backbone"][9][2] == "SPPF"
    head = d["head"]
    assert head[0] == [-1, 1, "nn.Upsample", ["None", 2, "nearest"]]  # layer 11 reads MHSA through -1
    assert head[1][0] == [-1, 6] and head[4][0] == [-1, 4]  # laterals before the insertion: unchanged
    assert head[7][0] == [-1, 13]  # cat head P4 moved with the renumbering
    assert head[10] == [[-1, 10], 1, "Concat", [1]]  # the P5 concat reads MHSA
    assert head[12] == [[16, 19, 22], 1, "Detect", ["nc"]]
    assert (r.channels, r.after, r.index, r.readers, r.grid) == (256, 9, 10, (11, 21), 20)


@pytest.mark.parametrize("version,base,task", list(all_cases()))
def test_every_base_and_task_the_release_ships(version, base, task):
    r = generate(target(version), Request(scale="n", base=base, task=task))
    stock, _ = base_layers(version, base, task)
    assert r.file_name == f"{base}n{SUFFIX[task]}-MHSA.yaml"
    assert r.stock_name == f"{base}n{SUFFIX[task]}.yaml"
    new = layers(r.data)
    assert len(new) == len(layers(stock)) + 1
    # after the backbone's last layer (SPPF in yolov8, C2PSA in yolo11/yolo26), the feature the head reads
    assert r.after == len(stock["backbone"]) - 1 and r.index == len(stock["backbone"])
    assert strip_mhsa(new, r.index) == layers(stock)
    assert readers_of(new, r.after) == [r.index]  # only MHSA reads the pre-attention feature
    assert new[-1][2].startswith(HEAD[task])
    assert r.channels == C_P5[base]["n"]
    # every other top-level key is kept (nc, kpt_shape, end2end, reg_max ...)
    assert {k: v for k, v in r.data.items() if k not in ("scales", "backbone", "head")} == {
        k: v for k, v in stock.items() if k not in ("scales", "backbone", "head")
    }


@pytest.mark.parametrize("version", releases.MATRIX)
@pytest.mark.parametrize("scale", request.SCALES)
def test_channels_per_scale(version, scale):
    for base in SHIPS[version]:
        r = generate(target(version), Request(scale=scale, base=base))
        assert r.channels == C_P5[base][scale], (base, scale)
        assert list(r.data["scales"]) == [scale]  # the only row: a renamed copy builds this scale
        stock, _ = base_layers(version, base)
        assert r.data["scales"][scale] == stock["scales"][scale]
        assert r.file_name == f"{base}{scale}-MHSA.yaml"
        assert naming.guess_scale(r.file_name) == scale


# -- --at and --lateral ---------------------------------------------------------------------------------------------


AT_V8 = {None: 9, "P5": 9, "p5": 9, "P4": 6, "P3": 4, "SPPF": 9, "sppf": 9, "7": 7, "0": 0, "21": 21, "12": 12}
AT_11 = {None: 10, "P5": 10, "P4": 6, "P3": 4, "SPPF": 9, "C2PSA": 10, "9": 9}
C_AT_N = {0: 16, 4: 64, 6: 128, 7: 256, 9: 256, 10: 256, 12: 128, 21: 256}


@pytest.mark.parametrize("version", releases.MATRIX)
@pytest.mark.parametrize("lateral", request.LATERALS)
def test_insertion_points(version, lateral):
    cases = [("yolov8", AT_V8)] + [(b, AT_11) for b in ("yolo11", "yolo26") if b in SHIPS[version]]
    for base, table in cases:
        stock, _ = base_layers(version, base)
        old = layers(stock)
        for at, after in table.items():
            req = Request(scale="n", base=base, at=at, lateral=lateral)
            if lateral == "pre-attention" and base == "yolov8" and at == "21":
                with pytest.raises(PatchError, match="no layer would read the MHSA output"):
                    generate(target(version), req)  # Detect reads 21 by index, not through -1
                continue
            r = generate(target(version), req)
            new = layers(r.data)
            assert (r.after, r.index) == (after, after + 1), (base, at)
            assert new[after + 1] == [-1, 1, "MHSA", [14, 14, 4]]
            assert strip_mhsa(new, after + 1) == old, (base, at)
            lateral_readers = [k for k in readers_of(old, after) if not (k == after + 1 and old[k][0] == -1)]
            succ = after + 2  # the old successor, moved by one
            if lateral == "attention":
                assert readers_of(new, after) == [after + 1]
                assert set(readers_of(new, after + 1)) == {r.index_map[k] for k in readers_of(old, after)}
            else:
                assert readers_of(new, after + 1) == ([succ] if old[after + 1][0] == -1 else [])
                assert set(readers_of(new, after)) == {after + 1} | {r.index_map[k] for k in lateral_readers}
            if base == "yolov8":
                assert r.channels == C_AT_N[after]


def test_tutorial_lateral_option_keeps_the_p5_concat_on_sppf():
    r = generate(target(releases.LATEST), Request(scale="n", lateral="pre-attention"))
    head = r.data["head"]
    assert head[0][0] == -1 and head[10][0] == [-1, 9] and head[12][0] == [16, 19, 22]
    assert r.readers == (11,)
    r4 = generate(target(releases.LATEST), Request(scale="n", at="P4", lateral="pre-attention"))
    assert r4.data["head"][1][0] == [-1, 6]  # cat backbone P4 keeps the C2f output
    assert r4.data["backbone"][8] == [-1, 1, "Conv", [1024, 3, 2]]
    assert "changes nothing" in " ".join(
        generate(target(releases.LATEST), Request(scale="n", at="7", lateral="pre-attention")).warnings
    )


def test_relative_froms_that_cross_the_insertion_are_renumbered(tmp_path):
    """A synthetic config with -2/-3 references: the renumbering is general, not written for layer 10."""
    pkg = releases.copy_release(releases.LATEST, tmp_path)
    cfg = pkg / "cfg/models/v8/yolov8.yaml"
    text = cfg.read_text()
    text = text.replace("- [[-1, 4], 1, Concat, [1]] # cat", "- [[-1, -10], 1, Concat, [1]] # cat")
    cfg.write_text(text)
    t = find_target(pkg)
    for at, lateral in (("P3", "attention"), ("P3", "pre-attention"), ("P5", "attention"), ("2", "attention")):
        r = generate(t, Request(scale="n", at=at, lateral=lateral))
        new = layers(r.data)
        assert strip_mhsa(new, r.index) == layers(yaml.safe_load(text)), at
    r = generate(t, Request(scale="n", at="P3"))
    assert r.data["head"][4][0] == [-1, -10]  # old 14 read 4 (P3); now 15 reads MHSA at 5
    r = generate(t, Request(scale="n", at="P3", lateral="pre-attention"))
    assert r.data["head"][4][0] == [-1, -11]  # now 15 still reads 4


# -- pos_emb, heads, imgsz ------------------------------------------------------------------------------------------


def test_pos_emb_grid_follows_imgsz_and_the_insertion_stride():
    t = target(releases.LATEST)
    assert generate(t, Request(scale="n", pos_emb=True)).mhsa_args == [20, 20, 4, True]
    assert generate(t, Request(scale="n", pos_emb=True, imgsz=1280)).mhsa_args == [40, 40, 4, True]
    assert generate(t, Request(scale="n", pos_emb=True, at="P4")).mhsa_args == [40, 40, 4, True]
    assert generate(t, Request(scale="n", pos_emb=True, at="P3", heads=8)).mhsa_args == [80, 80, 8, True]
    r = generate(t, Request(scale="n", pos_emb=True, imgsz=650))
    assert r.mhsa_args == [21, 21, 4, True] and any("uses 672" in w for w in r.warnings)
    r = generate(t, Request(scale="n", imgsz=1280))  # without --pos-emb the tutorial's 14x14 stays
    assert r.mhsa_args == [14, 14, 4] and not r.warnings
    assert "[-1, 1, MHSA, [20, 20, 4, True]]" in generate(t, Request(scale="n", pos_emb=True)).text


@pytest.mark.parametrize("version", releases.MATRIX)
def test_heads_are_checked_against_the_channels_of_each_scale(version):
    t = target(version)
    for scale, c in C_P5["yolov8"].items():
        for h in (1, 2, 4, 8, 16, 32, 64):
            assert generate(t, Request(scale=scale, heads=h)).data["backbone"][10][3][2] == h
        for h in (3, 5, 7, 12, 1000):
            if c % h:
                with pytest.raises(PatchError, match=f"--heads {h} does not divide the {c} channels"):
                    generate(t, Request(scale=scale, heads=h))
    assert generate(t, Request(scale="m", heads=9)).channels == 576  # 576 = 9 * 64: valid at m only
    with pytest.raises(PatchError, match="does not divide the 256"):
        generate(t, Request(scale="n", heads=9))


def test_heads_error_lists_every_divisor():
    t = target(releases.LATEST)
    with pytest.raises(PatchError) as err:
        generate(t, Request(scale="n", heads=3))  # 256 channels at P5
    assert str(err.value).endswith("choose one of 1, 2, 4, 8, 16, 32, 64, 128, 256")
    assert generate(t, Request(scale="n", heads=256)).data["backbone"][10][3][2] == 256


# -- the text: ultralytics' own style ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version,base,task", list(all_cases()))
def test_style_matches_the_base_file(version, base, task):
    t = target(version)
    r = generate(t, Request(scale="s", base=base, task=task))
    _, base_text = base_layers(version, base, task)
    new_lines, old_lines = r.text.split("\n"), base_text.split("\n")
    # one generated line, recording version, source and command
    gen = [ln for ln in new_lines if ln.startswith("# Generated by mhsa-patch")]
    assert gen == [
        f"# Generated by mhsa-patch {__version__} from ultralytics {version} {r.base_rel}: {r.command}"
    ]
    assert r.command == "mhsa-patch gen-yaml --scale s" + (f" --base {base}" if base != "yolov8" else "") + (
        f" --task {task}" if task != "detect" else ""
    )
    # the header comments are kept, in order, before the generated line
    header = old_lines[: next(k for k, ln in enumerate(old_lines) if re.match(r"^\w+:", ln))]
    kept = [ln for ln in new_lines if not ln.startswith("# Generated by")]
    assert kept[: len(header)] == header
    # every line of the base is kept, except scale rows of other scales and the rows that moved
    removed = [ln for ln in old_lines if ln not in new_lines]
    assert all(re.match(r"^\s+[nslmx]:\s*\[", ln) or ROW.match(ln) for ln in removed), removed
    assert sum(1 for ln in new_lines if re.match(r"^\s+[nslmx]:\s*\[", ln)) == 1
    # one row per line in flow style, like ultralytics' files, the MHSA row included
    n_rows = len(layers(r.data))
    assert sum(1 for ln in new_lines if ROW.match(ln)) == n_rows
    mhsa_line = next(ln for ln in new_lines if "MHSA, [" in ln)
    assert re.match(rf"^  - \[-1, 1, MHSA, \[14, 14, 4\]\](\s+)# {r.index} \(P5/32", mhsa_line)
    # the comment separator and the quotes are the base file's own
    sppf = next(ln for ln in old_lines if "SPPF, [" in ln)
    sep = re.search(r"\](\s+#)", sppf).group(1)  # "  #" up to 8.0.x, " #" later
    assert sep == ("  #" if version.startswith("8.0.") else " #")
    assert f"]]{sep} {r.index} " in mhsa_line
    quote, other = ("'nearest'", '"nearest"') if "'nearest'" in base_text else ('"nearest"', "'nearest'")
    assert (quote == "'nearest'") == version.startswith("8.0.")
    assert quote in r.text and other not in r.text
    # LF, final newline, UTF-8 emoji of line 1 kept
    assert "\r" not in r.text and r.text.endswith("\n") and r.text.split("\n")[0] == old_lines[0]
    assert "🚀" in r.text
    # the layer-index comments are renumbered: a leading number is the row's index
    k = 0
    for ln in new_lines:
        if ROW.match(ln):
            m = re.search(r"\]\s+#\s*(\d+)", ln)
            if m:
                assert int(m.group(1)) == k, ln
            k += 1
    assert k == n_rows


def test_renumbered_comments_on_the_tutorial_file():
    r = generate(target("8.0.98"), Request(scale="n"))
    for expect in (
        "  - [-1, 1, SPPF, [1024, 5]]  # 9\n  - [-1, 1, MHSA, [14, 14, 4]]  # 10 (P5/32: 256 channels, 4 heads)\n",
        "  - [-1, 3, C2f, [512]]  # 13\n",
        "  - [-1, 3, C2f, [256]]  # 16 (P3/8-small)\n",
        "  - [[-1, 13], 1, Concat, [1]]  # cat head P4\n",
        "  - [-1, 3, C2f, [512]]  # 19 (P4/16-medium)\n",
        "  - [[-1, 10], 1, Concat, [1]]  # cat head P5\n",
        "  - [-1, 3, C2f, [1024]]  # 22 (P5/32-large)\n",
        "  - [[16, 19, 22], 1, Detect, [nc]]  # Detect(P3, P4, P5)\n",
        "  - [-1, 1, Conv, [64, 3, 2]]  # 0-P1/2\n",
        "  n: [0.33, 0.25, 1024]  # the only row: builds scale n under any name that carries no other scale\n",
    ):
        assert expect in r.text, expect
    assert "s: [0.33" not in r.text


def test_output_is_deterministic_and_reads_back():
    t = target(releases.LATEST)
    a = generate(t, Request(scale="l", base="yolo11", task="segment", heads=8, pos_emb=True, at="P4"))
    b = generate(t, Request(scale="L", base="YOLO11", task="Segment", heads=8, pos_emb=True, at="p4"))
    assert a.text == b.text and yaml.safe_load(a.text) == a.data
    assert a.command == "mhsa-patch gen-yaml --scale l --base yolo11 --task segment --at P4 --heads 8 --pos-emb"


def test_crlf_base_file_keeps_crlf(tmp_path):
    pkg = releases.copy_release(releases.LATEST, tmp_path)
    cfg = pkg / "cfg/models/v8/yolov8.yaml"
    cfg.write_bytes(cfg.read_bytes().replace(b"\n", b"\r\n"))
    r = generate(find_target(pkg), Request(scale="n"))
    assert r.text.count("\r\n") == r.text.count("\n") and r.data["backbone"][10][2] == "MHSA"


# -- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"scale": "q"}, "unknown scale 'q': choose one of n, s, m, l, x"),
        ({"scale": ""}, "unknown scale"),
        ({"scale": "n", "base": "yolov5"}, "unknown base 'yolov5'"),
        ({"scale": "n", "task": "classify"}, "unknown task 'classify'"),
        ({"scale": "n", "lateral": "sideways"}, "unknown lateral 'sideways'"),
        ({"scale": "n", "heads": 0}, "--heads must be a positive integer, got 0"),
        ({"scale": "n", "heads": -4}, "--heads must be a positive integer, got -4"),
        ({"scale": "n", "heads": 3}, "--heads 3 does not divide the 256 channels"),
        ({"scale": "n", "imgsz": 0}, "--imgsz must be a positive integer"),
        ({"scale": "n", "at": "P6"}, "--at P6: no backbone layer at stride 64"),
        ({"scale": "n", "at": "C2f"}, "--at C2f: 4 backbone layers are C2f (2, 4, 6, 8): pass the index"),
        ({"scale": "n", "at": "C2PSA"}, "--at C2PSA: not a stage"),
        ({"scale": "n", "at": "-1"}, "--at -1: choose a layer index from 0 to 21"),
        ({"scale": "n", "at": "22"}, "--at 22: choose a layer index from 0 to 21 (layer 22 is the output head)"),
        ({"scale": "n", "at": "bogus"}, "--at bogus: not a stage"),
    ],
)
def test_bad_requests(kwargs, message):
    with pytest.raises(PatchError) as e:
        generate(target(releases.LATEST), Request(**kwargs))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("version", releases.MATRIX)
def test_bases_and_tasks_a_release_lacks(version):
    t = target(version)
    for base in request.BASES:
        for task in request.TASKS:
            if task in SHIPS[version].get(base, ()):
                continue
            with pytest.raises(PatchError) as e:
                generate(t, Request(scale="n", base=base, task=task))
            msg = str(e.value)
            assert f"ultralytics {version} ships no {base}" in msg and "\n" not in msg
            if base in SHIPS[version]:
                assert f"{base}{SUFFIX[task]}.yaml" in msg
            else:
                assert bases.BASE_SINCE[base] in msg


def test_unexpected_layouts_are_refused(tmp_path):
    pkg = releases.copy_release(releases.LATEST, tmp_path)
    cfg = pkg / "cfg/models/v8/yolov8.yaml"
    original = cfg.read_text()
    t = find_target(pkg)
    sppf = "  - [-1, 1, SPPF, [1024, 5]] # 9\n"
    cfg.write_text(original.replace(sppf, "  - - -1\n    - 1\n    - SPPF\n    - [1024, 5]\n"))
    with pytest.raises(PatchError, match="yolov8.yaml:32: a layer row must be"):
        generate(t, Request(scale="n"))
    cfg.write_text(original.replace(sppf, "  - {from: -1, n: 1, m: SPPF, args: [1024, 5]}\n"))
    with pytest.raises(PatchError, match="unexpected layout"):
        generate(t, Request(scale="n"))
    cfg.write_text(original.replace("backbone:", "backbone: ["))
    with pytest.raises(PatchError, match="not valid YAML"):
        generate(t, Request(scale="n"))
    cfg.write_text(original.replace(sppf, sppf + "  - [-1, 1, MHSA, [14, 14, 4]]\n"))
    with pytest.raises(PatchError, match="already has an MHSA layer"):
        generate(t, Request(scale="n"))


# -- file names: the scale lives in the name ------------------------------------------------------------------------


def test_scale_guess_and_unified_path_mirror_ultralytics():
    assert [naming.guess_scale(n) for n in ("yolov8n-MHSA.yaml", "yolo11x-seg-MHSA.yaml", "yolo26m.yaml")] == [
        "n",
        "x",
        "m",
    ]
    assert naming.guess_scale("my.yaml") == "" and naming.guess_scale("yolov8-MHSA.yaml") == ""
    assert naming.unified_path("/a/b/yolov8n-MHSA.yaml") == "/a/b/yolov8-MHSA.yaml"
    assert naming.unified_path("yolo11s-pose-MHSA.yaml") == "yolo11-pose-MHSA.yaml"


@pytest.mark.parametrize(
    "name,version,message",
    [
        ("yolov8-MHSA.yaml", "8.4.100", "ultralytics 8.4.100 tries the scale-less name first, so it would load"),
        ("yolov8-MHSA.yaml", "8.0.98", "in place of the scaled files next to it (yolov8n-MHSA.yaml ...)"),
        ("yolov8s-MHSA.yaml", releases.LATEST, "ultralytics reads scale 's' from this name"),
        ("yolov8n-MHSA.txt", releases.LATEST, "must end in .yaml"),
        ("yolov8n.yaml", "8.0.98", "would load its own yolov8.yaml instead"),
        ("yolov8n.yaml", "8.3.150", "would load its own yolov8.yaml instead"),
    ],
)
def test_refused_output_names(tmp_path, name, version, message):
    with pytest.raises(PatchError, match=re.escape(message)):
        naming.check_output(tmp_path / name, Request(scale="n"), target(version))


def test_accepted_output_names_and_sibling_warning(tmp_path):
    t = target(releases.LATEST)
    assert naming.check_output(tmp_path / "yolov8n-MHSA.yaml", Request(scale="n"), t) == []
    assert naming.check_output(tmp_path / "yolov8n.yaml", Request(scale="n"), t) == []  # 8.4.190 tries the name first
    assert "carries no scale" in naming.check_output(tmp_path / "my.yaml", Request(scale="n"), t)[0]
    (tmp_path / "yolov8-MHSA.yaml").write_text("nc: 1\n")
    # 8.4.190 tries yolov8n-MHSA.yaml itself first: the sibling is never loaded in its place, no warning
    assert naming.check_output(tmp_path / "yolov8n-MHSA.yaml", Request(scale="n"), t) == []
    w = naming.check_output(tmp_path / "yolov8n-MHSA.yaml", Request(scale="n"), target("8.4.100"))
    assert len(w) == 1 and "yolov8-MHSA.yaml exists" in w[0] and "ultralytics 8.4.100 loads it instead" in w[0]
    (tmp_path / "yolov8n-MHSA.yaml").write_text("x")
    with pytest.raises(PatchError, match="exists and differs from what gen-yaml would write: pass --force"):
        naming.check_output(tmp_path / "yolov8n-MHSA.yaml", Request(scale="n"), t)
    naming.check_output(tmp_path / "yolov8n-MHSA.yaml", Request(scale="n"), t, force=True)
    with pytest.raises(PatchError, match="no such directory"):
        naming.check_output(tmp_path / "nope" / "yolov8n-MHSA.yaml", Request(scale="n"), t)


# -- the command ------------------------------------------------------------------------------------------------------


@pytest.fixture
def pkg(tmp_path):
    return releases.copy_release(releases.LATEST, tmp_path / "site")


def test_cli_writes_the_default_name_in_the_working_directory(pkg, workdir):
    r = cli("--scale", "n", "--target", str(pkg))
    assert r.exit_code == 0, r.output
    out = workdir / "yolov8n-MHSA.yaml"
    assert out.read_text() == generate(find_target(pkg), Request(scale="n")).text
    assert "MHSA after layer 9 as layer 10" in r.stdout and "C=256" in r.stdout
    # not patched: written anyway, with a warning
    assert "not-applied" in r.stderr and "mhsa-patch apply" in r.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["yolov8n-MHSA.yaml"]  # no temporary left


def test_cli_output_options(pkg, workdir):
    r = cli("-s", "m", "-t", str(pkg), "-o", "sub/", "--base", "yolo26", "--task", "pose")
    assert_refused(r, "no such directory")
    (workdir / "sub").mkdir()
    r = cli("-s", "m", "-t", str(pkg), "-o", "sub", "--base", "yolo26", "--task", "pose", "--heads", "8", "--pos-emb")
    assert r.exit_code == 0, r.output
    d = yaml.safe_load((workdir / "sub" / "yolo26m-pose-MHSA-h8-pos640.yaml").read_text())
    assert d["backbone"][-1] == [-1, 1, "MHSA", [20, 20, 8, True]] and list(d["scales"]) == ["m"]
    r = cli("-s", "n", "-t", str(pkg), "-o", "my.yaml")
    assert r.exit_code == 0 and "carries no scale" in r.stderr
    assert yaml.safe_load((workdir / "my.yaml").read_text())["scales"] == {"n": [0.33, 0.25, 1024]}


def test_cli_refuses_to_overwrite_without_force(pkg, workdir):
    out = workdir / "yolov8n-MHSA.yaml"
    out.write_text("mine\n")
    assert_refused(cli("-s", "n", "-t", str(pkg)), "exists and differs", "pass --force", "or -o NAME")
    assert out.read_text() == "mine\n"
    r = cli("-s", "n", "-t", str(pkg), "--force")
    assert r.exit_code == 0 and "MHSA" in out.read_text()


def test_cli_scale_less_names_follow_the_target_release(pkg, workdir, tmp_path):
    """8.4.100 tries yolov8-MHSA.yaml before yolov8n-MHSA.yaml; 8.4.190 tries the name asked for first
    (``check_yaml(path, hard=False) or check_yaml(unified_path)`` in its nn/tasks.py)."""
    tasks = (releases.pristine(releases.LATEST) / "nn" / "tasks.py").read_text()
    assert "check_yaml(path, hard=False) or check_yaml(unified_path)" in tasks  # the premise, from the real file
    old = releases.copy_release("8.4.100", tmp_path / "old")
    assert "check_yaml(unified_path, hard=False) or check_yaml(path)" in (old / "nn" / "tasks.py").read_text()
    (workdir / "yolov8-MHSA.yaml").write_text("old\n")
    r = cli("-s", "n", "-t", str(old))
    assert r.exit_code == 0 and "yolov8-MHSA.yaml exists: ultralytics 8.4.100 loads it instead" in r.stderr
    line = assert_refused(cli("-s", "n", "-t", str(old), "-o", "yolov8-MHSA.yaml", "--force"), "8.4.100")
    assert "tries the scale-less name first" in line and "name it yolov8n-MHSA.yaml" in line
    # on 8.4.190 the sibling is harmless: no warning about it, and -o yolov8-MHSA.yaml is written (one scales row)
    (workdir / "yolov8n-MHSA.yaml").unlink()
    r = cli("-s", "n", "-t", str(pkg))
    assert r.exit_code == 0 and "exists" not in r.stderr and "8.4.100" not in r.stdout + r.stderr
    r = cli("-s", "n", "-t", str(pkg), "-o", "yolov8-MHSA.yaml", "--force")
    assert r.exit_code == 0, r.output
    assert "carries no scale: it still builds scale n" in r.stderr and "up to 8.4.100 would load it" in r.stderr
    assert yaml.safe_load((workdir / "yolov8-MHSA.yaml").read_text())["scales"] == {"n": [0.33, 0.25, 1024]}


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-s", "q"], "unknown scale 'q'"),
        (["-s", "n", "--base", "yolov5"], "unknown base 'yolov5'"),
        (["-s", "n", "--task", "classify"], "unknown task 'classify'"),
        (["-s", "n", "--heads", "0"], "--heads must be a positive integer"),
        (["-s", "n", "--heads", "-2"], "--heads must be a positive integer"),
        (["-s", "n", "--heads", "3"], "--heads 3 does not divide the 256 channels"),
        (["-s", "x", "--heads", "256"], "--heads 256 does not divide the 640 channels"),
        (["-s", "n", "--at", "P9"], "--at P9"),
        (["-s", "n", "--lateral", "both"], "unknown lateral"),
        (["-s", "n", "-o", "yolov8s-MHSA.yaml"], "reads scale 's'"),
        (["-s", "n", "--check"], "--check needs the patch"),
    ],
)
def test_cli_bad_input_is_one_line_and_no_file(pkg, workdir, args, needle):
    """A bad option value is a usage error (exit 2, ``usage:``); a refused name or an unpatched target exits 1."""
    usage = not needle.startswith(("reads scale", "--check"))
    line = assert_refused(cli(*args, "-t", str(pkg)), needle, code=2 if usage else 1)
    assert line.startswith("ERROR ❌ usage: ") == usage
    assert list(workdir.iterdir()) == []


def test_cli_missing_release_configs(tmp_path, workdir):
    old = releases.copy_release("8.0.98", tmp_path / "old")
    assert_refused(cli("-s", "n", "-t", str(old), "--task", "obb"), "ships no yolov8-obb.yaml")
    assert_refused(cli("-s", "n", "-t", str(old), "--base", "yolo11"), "ships no yolo11 configs")
    assert_refused(cli("-s", "n", "-t", str(old), "-o", "yolov8n.yaml"), "would load its own yolov8.yaml")
    assert_refused(cli("-s", "n", "-t", str(tmp_path / "nowhere")), "no such file or directory")
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    "args", [[], ["-s", "n", "--heads", "four"], ["-s", "n", "--imgsz", "big"], ["-s", "n", "--bogus"]]
)
def test_cli_usage_errors_exit_2(pkg, workdir, args):
    r = cli(*args, "-t", str(pkg))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and list(workdir.iterdir()) == []


def test_cli_real_process_exit_codes_and_no_torch(pkg, tmp_path):
    """As a user runs it: one stderr line, exit 1, nothing written; the command never imports torch/ultralytics."""
    code = (
        "import sys; from mhsa_patch.cli import main; sys.argv=['mhsa-patch', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules, 'imported torch'\n    raise\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "gen-yaml", "-s", "n", "--heads", "5", "-t", str(pkg)],
        capture_output=True, text=True, cwd=tmp_path, env=checkout_env(),
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "usage: --heads 5 does not divide" in r.stderr
    r = subprocess.run(
        [sys.executable, "-c", code, "gen-yaml", "-s", "s", "-t", str(pkg)],
        capture_output=True, text=True, cwd=tmp_path, env=checkout_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "yolov8s-MHSA.yaml").is_file()


def test_cli_check_reports_a_model_that_does_not_build_and_writes_nothing(pkg, workdir):
    from mhsa_patch.patching import engine

    engine.apply(find_target(pkg))
    init = pkg / "__init__.py"
    init.write_text('raise ImportError("boom: broken install")\n' + init.read_text())  # fails before torch loads
    r = cli("-s", "n", "-t", str(pkg), "--check")
    assert_refused(r, "--check: yolov8n-MHSA.yaml does not build with ultralytics", "boom: broken install")
    assert list(workdir.iterdir()) == []
