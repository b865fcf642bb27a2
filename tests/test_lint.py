"""The lint of ``check``: every rule on a YAML written here to reproduce the defect; nothing is built (fast).

The clean side: the tutorial's yolov8n-MHSA.yaml, every YAML gen-yaml writes on the latest release, and the
release's own model configs get no warning.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

import releases
from helpers import checkout_env, cli
from mhsa_patch.modelyaml.emit import generate
from mhsa_patch.modelyaml.lint import known_modules, lint_file, lint_text
from mhsa_patch.modelyaml.request import Request
from mhsa_patch.patching.target import find_target

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def latest(tmp_path_factory):
    """One copy of the latest release for the module (the lint only reads it)."""
    return find_target(releases.copy_release(releases.LATEST, tmp_path_factory.mktemp("site")))


@pytest.fixture(scope="module")
def known(latest):
    return known_modules(latest)


@pytest.fixture(scope="module")
def canonical(latest) -> str:
    """The tutorial's yolov8n-MHSA.yaml: MHSA after SPPF as layer 10 (what gen-yaml --scale n writes)."""
    return generate(latest, Request(scale="n")).text


@pytest.fixture(scope="module")
def stock(latest) -> str:
    return (latest.package / "cfg" / "models" / "v8" / "yolov8.yaml").read_text()


def lint(text: str, known, name: str = "yolov8n-MHSA.yaml", imgsz: int = 640):
    return lint_text(text, name, imgsz=imgsz, known=known)


def rules(result) -> list[str]:
    return [f.rule for f in result.warnings]


def sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# -- clean ------------------------------------------------------------------------------------------------------------


def test_the_tutorials_yaml_is_clean(canonical, known):
    r = lint(canonical, known)
    assert r.findings == () and r.error is None
    assert r.scale == "n" and r.layers == 24
    assert [m.describe() for m in r.mhsa] == [
        "layer 10: MHSA(n_dims=256, width=14, height=14, heads=4, pos_emb=False) on 20×20 (P5/32), "
        "width and height unused without pos_emb"
    ]


@pytest.mark.parametrize("base", ["yolov8", "yolo11", "yolo26"])
def test_every_yaml_gen_yaml_writes_is_clean(latest, known, base):
    """Every scale, task and insertion point (stages, a module name, indices in the backbone and the head), both
    laterals and pos_emb: no finding."""
    checked = 0
    for scale, task, at in itertools.product("nslmx", ("detect", "segment", "pose", "obb"),
                                             ("P3", "P4", "P5", "SPPF", "4", "15")):  # fmt: skip
        for extra in ({}, {"lateral": "pre-attention"}, {"pos_emb": True}) if scale == "n" else ({},):
            res = generate(latest, Request(scale=scale, base=base, task=task, at=at, **extra))
            r = lint(res.text, known, name=res.file_name)
            assert r.findings == (), (res.command, [f.message for f in r.findings])
            assert [m.index for m in r.mhsa] == [res.index] and r.mhsa[0].n_dims == res.channels
            checked += 1
    assert checked == 5 * 4 * 6 + 2 * 4 * 6


@pytest.mark.parametrize("base", ["yolov8", "yolo11", "yolo26"])
def test_every_bot3_yaml_gen_yaml_writes_is_clean(latest, known, base):
    """gen-yaml --layer BoT3 (BoT3 in place of the backbone's last C2f/C3k2), every scale and task: no finding, the
    channels replayed as C3's (the BoT3 row reads as a scaled module)."""
    for scale, task in itertools.product("nslmx", ("detect", "segment", "pose", "obb")):
        res = generate(latest, Request(scale=scale, base=base, task=task, layer="BoT3"))
        r = lint(res.text, known, name=res.file_name)
        assert r.findings == (), (res.command, [f.message for f in r.findings])
        assert r.mhsa == () and r.layers == len(res.data["backbone"] + res.data["head"])
    assert lint("- [-1, 3, BoT3, [1024]]", known).error is not None  # not a model YAML: still one finding


def test_the_releases_own_configs_build_and_warn_only_about_their_scale(latest, known):
    """No false alarm on ultralytics' own files (P2/P6, RT-DETR, YOLO-World, v3-v10 ...): no error, no warning
    besides the scale of a scale-less name."""
    paths = sorted((latest.package / "cfg" / "models").rglob("*.yaml"))
    assert len(paths) > 40
    for p in paths:
        text = p.read_text()
        r = lint(text, known, name=p.name)
        assert r.error is None, (p.name, r.error)
        assert set(rules(r)) <= {"scales"}, (p.name, [f.message for f in r.warnings])
        scaled = re.sub(r"^(yolo(?:e-)?v?\d+)", lambda m: m.group(1) + "n", p.name)
        if "scales" in text and "n:" in text and scaled != p.name:
            assert lint(text, known, name=scaled).findings == (), scaled


# -- MHSA rows --------------------------------------------------------------------------------------------------------

MHSA_ROW = "- [-1, 1, MHSA, [14, 14, 4]] # 10 (P5/32: 256 channels, 4 heads)"


def test_args_read_as_channels_and_heads(canonical, known):
    text = sub(canonical, MHSA_ROW, "- [-1, 1, MHSA, [1024, 8]] # 1024 channels, 8 heads")
    r = lint(text, known)
    assert r.mhsa[0].describe() == (
        "layer 10: MHSA(n_dims=256, width=1024, height=8, heads=4, pos_emb=False) on 20×20 (P5/32), "
        "width and height unused without pos_emb"
    )
    assert rules(r) == ["mhsa-args"]  # "# 1024 channels" is not taken for an index comment
    msg = r.warnings[0].message
    assert r.warnings[0].layer == 10
    assert msg.startswith("layer 10 MHSA [1024, 8]: width=1024 and height=8 do nothing without pos_emb and heads stays 4")
    assert "channels from its input (256 here)" in msg
    assert msg.endswith("if you meant 8 heads, write - [-1, 1, MHSA, [14, 14, 8]]")


@pytest.mark.parametrize(
    "args,ending",
    [
        ("[4]", "heads is 4 only by default: "),
        ("[8]", "if you meant 8 heads, write - [-1, 1, MHSA, [14, 14, 8]]"),
        ("[256]", "write - [-1, 1, MHSA, [14, 14, 4]]"),
        ("[3]", "[14, 14, 3]] (but 3 does not divide 256: pick heads that do)"),
    ],
)
def test_a_lone_number(canonical, known, args, ending):
    r = lint(sub(canonical, "MHSA, [14, 14, 4]]", f"MHSA, {args}]"), known)
    assert rules(r) == ["mhsa-args"] and ending in r.warnings[0].message


@pytest.mark.parametrize("args", ["[14, 14, 4]", "[14, 14]", "[20, 20, 4, True]", "[]", "[14, 14, 8]"])
def test_args_that_mean_what_they_say(canonical, known, args):
    assert lint(sub(canonical, "MHSA, [14, 14, 4]]", f"MHSA, {args}]"), known).findings == ()


def test_heads_that_do_not_divide_the_channels(canonical, known):
    r = lint(sub(canonical, "MHSA, [14, 14, 4]]", "MHSA, [14, 14, 3]]"), known)
    assert r.error.layer == 10 and r.error.message == (
        "layer 10 MHSA [14, 14, 3]: n_dims=256 is not divisible by heads=3 (the build fails with ValueError); "
        "choose heads among 1, 2, 4, 8, 16, 32, 64"
    )
    r = lint(sub(canonical, "MHSA, [14, 14, 4]]", "MHSA, [14, 14, 4, False, 1]]"), known)
    assert "MHSA takes at most 4 arguments" in r.error.message


def test_pos_emb_grid_that_does_not_match_the_feature_map(canonical, known):
    text = sub(canonical, "MHSA, [14, 14, 4]]", "MHSA, [14, 14, 4, True]]")
    r = lint(text, known)
    assert rules(r) == ["pos-grid"]
    assert r.warnings[0].message == (
        "layer 10 MHSA: pos_emb tables are 14×14 but the feature map is 20×20 at --imgsz 640: they are resized on "
        "every forward pass (it works, at the cost of a resize); fix for 640: - [-1, 1, MHSA, [20, 20, 4, True]]"
    )
    grid20 = sub(canonical, "MHSA, [14, 14, 4]]", "MHSA, [20, 20, 4, True]]")
    assert lint(grid20, known).findings == ()
    r = lint(grid20, known, imgsz=320)
    assert rules(r) == ["pos-grid"] and "[10, 10, 4, True]" in r.warnings[0].message


# -- wiring -----------------------------------------------------------------------------------------------------------


def test_mhsa_inserted_before_sppf_without_renumbering(stock, known):
    """The hand edit the tutorial invites: one row in, nothing renumbered. Detect reads the three Concats, the last
    head block is dead, the index comments are stale."""
    text = sub(stock, "  - [-1, 1, SPPF, [1024, 5]] # 9\n",
               "  - [-1, 1, MHSA, [14, 14, 4]] # 9\n  - [-1, 1, SPPF, [1024, 5]] # 10\n")  # fmt: skip
    r = lint(text, known)
    assert r.error is None and rules(r) == ["head-input", "dead-layer", "index-comment"]
    head, dead, comments = r.warnings
    assert head.layer == 23 and head.message.startswith(
        "layer 23 Detect [15, 18, 21] reads layers that are not the last of their stage: 15 (Concat) is followed "
        "by 16 (C2f); 18 (Concat) is followed by 19 (C2f); 21 (Concat) is followed by 22 (C2f)"
    )
    assert head.message.endswith("fix: - [[16, 19, 22], 1, Detect, [nc]]")
    assert dead.layer == 22 and dead.message.startswith(
        "layer 22 C2f: nothing reads its output, neither a later layer nor the Detect head: "
        "about 493,056 parameters that never train"  # yolov8n's P5 C2f: 493,056 in ultralytics' own table
    )
    assert comments.message.startswith(
        "index comments disagree with the row positions: layer 13 says # 12, layer 16 says # 15, "
        "layer 19 says # 18, layer 22 says # 21"
    )


def test_mhsa_replacing_sppf_that_nothing_reads(stock, known):
    """MHSA in SPPF's place as layer 9, but the head still starts from the C2f before it."""
    text = sub(stock, "  - [-1, 1, SPPF, [1024, 5]] # 9\n", "  - [-1, 1, MHSA, [14, 14, 4]] # 9\n")
    text = sub(text, '  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]\n  - [[-1, 6]',
               '  - [8, 1, nn.Upsample, [None, 2, "nearest"]]\n  - [[-1, 6]')  # fmt: skip
    text = sub(text, "[[-1, 9], 1, Concat", "[[-1, 8], 1, Concat")
    r = lint(text, known)
    assert rules(r) == ["dead-layer"] and r.warnings[0].layer == 9
    assert r.warnings[0].message.startswith(
        "layer 9 MHSA: nothing reads its output, neither a later layer nor the Detect head: about 197,376 "
        "parameters that never train; fix: point a later layer's 'from' at 9"
    )


def test_mhsa_after_the_last_head_block_with_detect_unchanged(stock, known):
    text = sub(stock, "  - [-1, 3, C2f, [1024]] # 21 (P5/32-large)\n",
               "  - [-1, 3, C2f, [1024]] # 21 (P5/32-large)\n  - [-1, 1, MHSA, [14, 14, 4]] # 22\n")  # fmt: skip
    r = lint(text, known)
    assert rules(r) == ["dead-layer"] and r.warnings[0].message.startswith("layer 22 MHSA: nothing reads its output")


def test_concat_of_stride_16_and_stride_32_maps(stock, known):
    r = lint(sub(stock, "[[-1, 9], 1, Concat", "[[-1, 12], 1, Concat"), known, name="yolov8n.yaml")
    assert r.error.layer == 20 and r.error.message == (
        "layer 20 Concat [-1, 12]: stride 16 and stride 32 inputs (layer 19 Conv: P5/32, layer 12 C2f: P4/16): "
        "torch.cat needs maps of one size"
    )


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("[[-1, 6], 1, Concat", "[[-1, 16], 1, Concat", "layer 11 Concat [-1, 16]: 'from' 16 points forward to layer "
                                                        "16, which comes later"),
        ("[[-1, 6], 1, Concat", "[[-1, 11], 1, Concat", "'from' 11 points forward to itself"),
        ("- [-1, 1, SPPF, [1024, 5]]", "- [-12, 1, SPPF, [1024, 5]]", "layer 9 SPPF: 'from' -12 points before layer 0"),
        ("[[15, 18, 21], 1, Detect", "[[15, 18, 24], 1, Detect", "layer 22 Detect [15, 18, 24]: 'from' 24"),
    ],
)
def test_from_that_points_forward_or_out_of_range(stock, known, old, new, message):
    r = lint(sub(stock, old, new), known, name="yolov8n.yaml")
    assert message in r.error.message and r.error.rule == "from"


# -- the file ---------------------------------------------------------------------------------------------------------


def test_no_scales_section(canonical, known):
    text = re.sub(r"\nscales:.*?\n\n", "\n\n", canonical, flags=re.S)
    r = lint(text, known)
    assert rules(r) == ["scales"] and r.scale == ""
    assert r.warnings[0].message.startswith(
        "yolov8n-MHSA.yaml has no 'scales' section: parse_model builds depth 1.0, width 1.0 with no max_channels"
    )
    assert r.mhsa[0].n_dims == 1024  # full width: 4x what the name promises


def test_a_name_that_selects_another_scale(stock, canonical, known):
    r = lint(stock, known, name="my-model.yaml")
    assert rules(r) == ["scales"] and r.scale == "n"
    assert r.warnings[0].message.startswith(
        "my-model.yaml carries no scale in its name: ultralytics falls back to the first 'scales' row, 'n' "
        "(of n, s, m, l, x)"
    )
    assert lint(canonical, known, name="my-model.yaml").findings == ()  # one row: builds that row by design
    r = lint(canonical, known, name="yolov8s-MHSA.yaml")
    assert r.error.rule == "scales" and r.error.message.startswith(
        "yolov8s-MHSA.yaml: ultralytics reads scale 's' from the name but the file's 'scales' has only n"
    )
    r = lint("scale: s\n" + stock, known, name="yolov8n-MHSA.yaml")
    assert rules(r) == ["scales"] and "the 'scale: s' key is ignored" in r.warnings[0].message


def test_unknown_modules_are_named_in_one_line(canonical, known):
    text = sub(canonical, "- [-1, 3, C2f, [512]] # 13", "- [-1, 3, BiFPN, [512]] # 13")
    text = sub(text, "- [-1, 1, Conv, [512, 3, 2]]", "- [-1, 1, CBAM2, [512, 3, 2]]")
    text = sub(text, '- [-1, 1, nn.Upsample, [None, 2, "nearest"]]', '- [-1, 1, nn.Upsampling, [None, 2]]')
    r = lint(text, known)
    assert r.error.rule == "unknown-module" and r.error.message == (
        f"unknown modules (not in ultralytics {releases.LATEST} or the patch): CBAM2 (layers 5, 20), "
        "nn.Upsampling (layers 11, 14), BiFPN (layer 13)"
    )


def test_known_modules_come_from_the_release_text_and_the_patch(latest, known):
    assert {"Conv", "C2f", "SPPF", "Concat", "Detect", "C3k2", "C2PSA", "MHSA"} <= known.names
    assert known.patched is False  # MHSA is known through the patch's LAYERS, not the unpatched tasks.py
    assert {"Upsample", "Identity", "MaxPool2d", "ConvTranspose2d"} <= known.nn
    old = known_modules(find_target(releases.pristine("8.0.98")))
    assert "C3k2" not in old.names and "C2f" in old.names and "MHSA" in old.names


def test_block_style_rows_are_linted_without_comments(canonical, known):
    text = sub(canonical, "  - [-1, 1, MHSA, [14, 14, 4]] #", "  - - -1\n    - 1\n    - MHSA\n    - [1024, 8]\n  #")
    r = lint(text, known)
    assert rules(r) == ["mhsa-args"]


def test_sibling_loaded_in_place_of_the_file(tmp_path, canonical):
    """Releases up to 8.4.100 load yolov8-MHSA.yaml when asked for yolov8n-MHSA.yaml."""
    old = find_target(releases.copy_release("8.3.150", tmp_path / "site"))
    (tmp_path / "yolov8n-MHSA.yaml").write_text(canonical)
    assert lint_file(tmp_path / "yolov8n-MHSA.yaml", old).findings == ()
    (tmp_path / "yolov8-MHSA.yaml").write_text(canonical)
    r = lint_file(tmp_path / "yolov8n-MHSA.yaml", old)
    assert [f.rule for f in r.warnings] == ["sibling"] and "ultralytics 8.3.150 loads it instead" in r.warnings[0].message


# -- the command ------------------------------------------------------------------------------------------------------


def check(*args: str):
    return cli("check", *args)


def test_lint_only_passes_the_tutorials_yaml_on_an_unpatched_copy(latest, canonical, tmp_path):
    """--lint-only needs no patch: it reads files. It says the target is not patched, as information."""
    y = tmp_path / "yolov8n-MHSA.yaml"
    y.write_text(canonical)
    r = check(str(y), "--lint-only", "--strict", "--target", str(latest.package))
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    assert "Lint yolov8n-MHSA.yaml: 24 layers, scale n, 1 MHSA, --imgsz 640" in r.stdout
    assert "  layer 10: MHSA(n_dims=256, width=14, height=14, heads=4, pos_emb=False) on 20×20 (P5/32)" in r.stdout
    assert f"is not patched: run 'mhsa-patch apply --target {latest.package}' before building" in r.stdout
    assert "lint passed ✅ (no warnings; nothing built)" in r.stdout


def test_warnings_and_strict(latest, stock, tmp_path):
    y = tmp_path / "yolov8n-MHSA.yaml"
    y.write_text(sub(stock, "  - [-1, 1, SPPF, [1024, 5]] # 9\n",
                     "  - [-1, 1, MHSA, [14, 14, 4]] # 9\n  - [-1, 1, SPPF, [1024, 5]] # 10\n"))  # fmt: skip
    r = check(str(y), "--lint-only", "--target", str(latest.package))
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 3 and all(ln.startswith("WARNING ⚠️ layer") or "index comments" in ln for ln in lines)
    assert "lint passed ✅ (3 warnings; nothing built)" in r.stdout
    r = check(str(y), "--lint-only", "--strict", "--target", str(latest.package))
    assert r.exit_code == 1 and r.stderr.splitlines()[-1] == "ERROR ❌ --strict: 3 lint warnings"
    assert "Traceback" not in r.output


def test_a_graph_that_cannot_build_is_one_error_line(latest, stock, tmp_path):
    y = tmp_path / "yolov8n.yaml"
    y.write_text(sub(stock, "[[-1, 9], 1, Concat", "[[-1, 12], 1, Concat"))
    r = check(str(y), "--lint-only", "--target", str(latest.package))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.splitlines() == [
        "ERROR ❌ the model does not build: layer 20 Concat [-1, 12]: stride 16 and stride 32 inputs (layer 19 Conv: "
        "P5/32, layer 12 C2f: P4/16): torch.cat needs maps of one size"
    ]


def test_a_normal_check_lints_before_anything_is_built(latest, canonical, tmp_path):
    """Without --lint-only the lint runs first: its error stops the command before the patch is even asked for."""
    y = tmp_path / "yolov8n-MHSA.yaml"
    y.write_text(sub(canonical, "MHSA, [14, 14, 4]]", "MHSA, [14, 14, 3]]"))
    r = check(str(y), "--target", str(latest.package))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "the model does not build: layer 10 MHSA [14, 14, 3]: n_dims=256 is not divisible by heads=3" in r.stderr
    y.write_text(sub(canonical, "MHSA, [14, 14, 4]]", "MHSA, [1024, 8]]"))
    r = check(str(y), "--target", str(latest.package))  # warns, then the unpatched target is refused
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert [ln.split(" ")[0] for ln in r.stderr.splitlines()] == ["WARNING", "ERROR"]
    assert "if you meant 8 heads" in r.stderr and "not patched" in r.stderr
    r = check(str(y), "--lint-only", "--json", "--target", str(latest.package))
    assert r.exit_code == 0 and '"rule": "mhsa-args"' in r.stdout and r.stdout.lstrip().startswith("{")


def test_lint_only_refuses_a_checkpoint(latest, tmp_path):
    pt = tmp_path / "yolov8n-MHSA.pt"
    pt.write_bytes(b"not really")
    r = check(str(pt), "--lint-only", "--target", str(latest.package))
    assert r.exit_code == 1 and "--lint-only reads a model YAML" in r.stderr


def test_lint_only_imports_neither_torch_nor_ultralytics(latest, canonical, tmp_path):
    """As a user runs it, in a fresh interpreter: no torch, no ultralytics, no child process (the copy is not
    patched, so a build would have been refused)."""
    y = tmp_path / "yolov8x-MHSA.yaml"
    y.write_text(generate(latest, Request(scale="x")).text)
    code = (
        "import sys; from mhsa_patch.cli import main; sys.argv=['mhsa-patch', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules, 'imported torch'\n    raise\n"
    )
    env = checkout_env()
    r = subprocess.run([sys.executable, "-c", code, "check", str(y), "--lint-only", "--target", str(latest.package)],
                       capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "lint passed ✅" in r.stdout and "MHSA(n_dims=640," in r.stdout


@pytest.mark.parametrize(
    "old,new,rule",
    [
        ("scales: #", "scales: [1, 2]\nold_scales: #", "scales"),
        ("- [-1, 1, Conv, [64, 3, 2]]", "- [-1, 1, Conv, [64, 3, Conv]]", "lint-failed"),  # the build will tell
        ("- [-1, 1, Conv, [64, 3, 2]]", "- [-1, Conv, [64, 3, 2]]", "row"),
        ("- [-1, 1, Conv, [64, 3, 2]]", "- [-1, 1, Conv, 64]", "error"),
        ("backbone:", "backbone: 3\nold_backbone:", "yaml"),
    ],
)
def test_malformed_files_never_raise(canonical, known, old, new, rule):
    r = lint(sub(canonical, old, new), known)
    assert rule in [f.rule for f in r.findings], r.findings


def test_lint_only_names_each_layer_of_the_patch(latest, tmp_path):
    """A BoT3 model (gen-yaml --layer BoT3) is linted clean, and the summary counts its BoT3 row."""
    from mhsa_patch.modelyaml.emit import generate
    from mhsa_patch.modelyaml.request import Request

    r = generate(latest, Request(scale="n", layer="BoT3"))
    y = tmp_path / r.file_name
    y.write_text(r.text)
    out = check(str(y), "--lint-only", "--strict", "--target", str(latest.package))
    assert out.exit_code == 0, out.output
    assert "Lint yolov8n-BoT3.yaml: 23 layers, scale n, 1 BoT3, --imgsz 640" in out.stdout
