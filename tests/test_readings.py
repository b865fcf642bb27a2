"""Issue 14 B: the readings of a layer's rows (patches/readings.py) as the engine, the lint and gen-yaml use them.

Fast and release-free: parse_model texts in the shapes releases and forks write (the release-backed fork shapes are
in tests/test_forks.py).
"""

from __future__ import annotations

import ast
import dataclasses

import pytest

from mhsa_patch.modelyaml.lint import KnownModules, lint_text
from mhsa_patch.patches.readings import BASE_MODULES, BASE_REPEAT, SCALED_CHANNELS, TUTORIAL, reading
from mhsa_patch.patching.journal import Record, parse
from mhsa_patch.patching.readings import cannot_build, in_force

# parse_model as 8.0.x-8.3.x write it: a set literal for the scaled modules, an inline repeat set inside it.
PARSE_MODEL = """\
def parse_model(d, ch, verbose=True):
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        if m in {Conv, C2f, SPPF, EXTRA_BASE}:
            c1, c2 = ch[f], args[0]
            if c2 != nc:  # if c2 not equal to number of classes (i.e. for Classify() output)
                c2 = make_divisible(min(c2, max_channels) * width, 8)
            args = [c1, c2, *args[1:]]
            if m in {C2f, EXTRA_REPEAT}:
                args.insert(2, n)  # number of repeats
                n = 1
        elif m is AIFI:
            args = [ch[f], *args]
BRANCHES        else:
            c2 = ch[f]
"""


def tasks(base: str = "", repeat: str = "", branches: str = "") -> str:
    return (
        PARSE_MODEL.replace(", EXTRA_BASE", base).replace(", EXTRA_REPEAT", repeat).replace("BRANCHES", branches)
    )


def branch(name: str, body: str, mark: str = "") -> str:
    lines = "".join(f"            {ln}\n" for ln in body.splitlines())
    return f"        elif m is {name}:{mark}\n{lines}"


@pytest.mark.parametrize(
    "text, layer, name",
    [
        (tasks(), "MHSA", "fallback"),
        (tasks(branches=branch("MHSA", "args = [ch[f], *args]")), "MHSA", "tutorial"),
        (tasks(branches=branch("MHSA", "c2 = ch[f]\nargs = [c2, *args]")), "MHSA", "tutorial"),
        (tasks(branches=branch("MHSA", SCALED_CHANNELS.bodies[0])), "MHSA", "scaled-channels"),
        (tasks(branches=branch("MHSA", SCALED_CHANNELS.bodies[1])), "MHSA", "scaled-channels"),
        (tasks(base=", BoT3"), "BoT3", "base_modules"),
        (tasks(base=", BoT3", repeat=", BoT3"), "BoT3", "base_modules+repeat"),
        (tasks(branches=branch("MHSA", "args = [ch[f], 4, *args]")), "MHSA", "unrecognised"),
        (tasks(branches=branch("MHSA", "c2 = ch[f]\nargs = [c2, *args]", "  # mhsa-patch")), "MHSA", "mhsa-patch"),
    ],
)
def test_the_reading_in_force_is_read_from_the_branch_that_selects_the_layer(text, layer, name):
    found = in_force(text, layer)
    assert found.name == name
    if name != "fallback":
        assert text.splitlines()[found.line - 1].lstrip().startswith(("if m in", "elif m is"))


# Issue 22 D.2: a branch is read by what it computes, however it is spelled (patching/branch_eval.py).
SEVENTEEN = ", ".join(f"Att{k}" for k in range(17))
BY_BEHAVIOUR = {
    # the field's fork: MHSA last in a list shared with 17 attentions, c1 named, args[0:]
    "list-of-17": (f"elif m in [{SEVENTEEN}, MHSA]:", "c1 = ch[f]\nargs = [c1, *args[0:]]", "tutorial"),
    "tuple-concatenated": ("elif m in (Att0, MHSA, Att1):", "c1 = ch[f]\nargs = [c1] + args[0:]", "tutorial"),
    "list-call": ("elif m is MHSA:", "args = [ch[f]] + list(args)", "tutorial"),
    "tuple-args": ("elif m is MHSA:", "c1 = ch[f]\nargs = (c1, *args)", "tutorial"),
    # a shared branch with a step for another module: the layer does not take it
    "inner-if-for-another": ("elif m in {Att0, MHSA}:", "c2 = ch[f]\nargs = [c2, *args]\nif m is Att0:\n    args = args[:1]",
                             "tutorial"),
    "inner-if-for-it": ("elif m in {Att0, MHSA}:", "c2 = ch[f]\nargs = [c2, *args]\nif m is MHSA:\n    args = args[:1]",
                        "unrecognised"),
    "scaled-spelled-out": ("elif m is MHSA:", "c1 = ch[f]\nc2 = make_divisible(min(args[0], max_channels) * width, 8)\n"
                           "args = [c1, *args[1:]]", "scaled-channels"),
    # not the tutorial's call: an extra value, the wrong channels recorded, the wrong input, no min()
    "extra-value": ("elif m is MHSA:", "args = [ch[f], 4, *args]", "unrecognised"),
    "records-other-channels": ("elif m is MHSA:", "args = [ch[f], *args]\nc2 = args[1]", "unrecognised"),
    "previous-layer-always": ("elif m is MHSA:", "args = [ch[-1], *args]", "unrecognised"),
    "scaled-without-min": ("elif m is MHSA:", "c1 = ch[f]\nc2 = make_divisible(args[0] * width, 8)\n"
                           "args = [c1, *args[1:]]", "unrecognised"),
    # what this evaluator does not follow is never guessed, and never run
    "a-call-it-does-not-know": ("elif m is MHSA:", "args = [ch[f], *args]\nprint(args)", "unrecognised"),
    "exec": ("elif m is MHSA:", "exec('import os')\nargs = [ch[f], *args]", "unrecognised"),
    "a-loop": ("elif m is MHSA:", "for a in args:\n    pass\nargs = [ch[f], *args]", "unrecognised"),
}


@pytest.mark.parametrize("case", list(BY_BEHAVIOUR))
def test_a_branch_is_read_by_what_it_computes(case):
    head, body, name = BY_BEHAVIOUR[case]
    lines = "".join(f"            {ln}\n" for ln in body.splitlines())
    found = in_force(tasks(branches=f"        {head}\n{lines}"), "MHSA")
    assert found.name == name
    assert found.line and tasks(branches=f"        {head}\n{lines}").splitlines()[found.line - 1].strip() == head


def test_the_evaluator_runs_nothing(tmp_path, monkeypatch):
    """A branch that would write a file if it ran: reading it writes nothing (the source is only walked)."""
    monkeypatch.chdir(tmp_path)
    body = "open('ran', 'w').write('x')\nargs = [ch[f], *args]"
    assert in_force(tasks(branches=branch("MHSA", body)), "MHSA").name == "unrecognised"
    assert list(tmp_path.iterdir()) == []


def test_base_modules_through_a_holder_variable_as_8_4_writes_it():
    text = tasks().replace("if m in {Conv, C2f, SPPF}:", "if m in base_modules:").replace(
        "if m in {C2f}:", "if m in repeat_modules:"
    )
    text = text.replace("    for i,", "    base_modules = frozenset({Conv, C2f, BoT3})\n"
                        "    repeat_modules = frozenset({C2f})\n    for i,")
    assert in_force(text, "BoT3").name == "base_modules"
    assert in_force(text.replace("frozenset({C2f})", "frozenset({C2f, BoT3})"), "BoT3").name == "base_modules+repeat"


def test_differs_compares_with_the_tools_rule_per_layer():
    """MHSA's rule reads as the tutorial, BoT3's as base_modules+repeat: only other readings are kept."""
    assert not in_force(tasks(branches=branch("MHSA", "args = [ch[f], *args]")), "MHSA").differs
    assert in_force(tasks(base=", MHSA"), "MHSA").differs
    assert not in_force(tasks(base=", BoT3", repeat=", BoT3"), "BoT3").differs
    assert in_force(tasks(base=", BoT3"), "BoT3").differs
    assert in_force(tasks(branches=branch("BoT3", "args = [ch[f], *args]")), "BoT3").differs


def test_each_reading_makes_its_call():
    row = [1024, 14, 4]
    assert TUTORIAL.call(256, 256, 3, row) == ([256, 1024, 14, 4], 3)
    assert SCALED_CHANNELS.call(256, 256, 3, row) == ([256, 14, 4], 3)
    assert BASE_MODULES.call(256, 256, 3, row) == ([256, 256, 14, 4], 3)
    assert BASE_REPEAT.call(256, 256, 3, row) == ([256, 256, 3, 14, 4], 1)


def test_a_reading_that_passes_more_than_the_class_takes_cannot_build_it():
    found = in_force(tasks(base=", BoT3"), "BoT3")
    assert cannot_build(found) is None
    greedy = dataclasses.replace(BASE_MODULES, lead=("c1", "c2", "n", "c1", "c2", "n", "c1", "c2"))
    assert "takes 7 positional arguments" in cannot_build(dataclasses.replace(found, rule=greedy))


def test_the_journal_records_the_reading_in_force_and_refuses_unknown_ones():
    record = Record("applied", "0.1.0", "0" * 64, "8.4.190", ("MHSA", "BoT3"), {},
                    {"MHSA": "mhsa-patch", "BoT3": "base_modules"})
    import json

    again = parse(json.dumps(record.to_json()).encode())
    assert dict(again.readings) == {"MHSA": "mhsa-patch", "BoT3": "base_modules"} and again.kept == {"BoT3"}
    old = record.to_json()
    del old["readings"]  # a journal of the previous version: nothing recorded, nothing kept
    assert parse(json.dumps(old).encode()).kept == frozenset()
    with pytest.raises(ValueError, match="not a reading"):
        Record("applied", "0.1.0", "0" * 64, "8.4.190", ("MHSA",), {}, {"MHSA": "exec"})


MODEL = """nc: 3
scales:
  n: [1.0, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, ROW]
head:
  - [[1, 2], 1, Detect, [nc]]
"""


def known(**readings) -> KnownModules:
    return KnownModules("8.3.135", None, readings={k: (reading(v), f"'{v}'") for k, v in readings.items()},
                        patched=False, apply_hint="mhsa-patch apply --force")


def test_lint_reads_a_bot3_row_as_the_target_does():
    text = MODEL.replace("ROW", "3, BoT3, [256]")
    fork = lint_text(text, "fork-n.yaml", known=known(BoT3="base_modules"))
    ours = lint_text(text, "fork-n.yaml", known=known(BoT3="base_modules+repeat"))
    assert fork.calls[0].call() == "BoT3(c1=64, c2=64, n=1, e=0.5, e2=1, w=20, h=20) ×3 in a row"
    assert ours.calls[0].call() == "BoT3(c1=64, c2=64, n=3, e=0.5, e2=1, w=20, h=20)"
    assert fork.apply_hint == "mhsa-patch apply --force"


def test_lint_reads_a_scaled_channel_mhsa_row_and_its_channels():
    text = MODEL.replace("ROW", "1, MHSA, [256, 14, 14, 4]")
    fork = lint_text(text, "fork-n.yaml", known=known(MHSA="scaled-channels"))
    assert fork.error is None and fork.mhsa[0].call() == (
        "MHSA(n_dims=64, width=14, height=14, heads=4, pos_emb=False)"
    )
    # the tool's rule reads the same row as MHSA(64, 256, 14, 14, 4): 14 heads do not divide 64 channels
    assert lint_text(text, "fork-n.yaml", known=known(MHSA="tutorial")).error.rule == "mhsa-heads"


def test_lint_warns_on_a_row_written_for_a_foreign_mhsa():
    r = lint_text(MODEL.replace("ROW", "1, MHSA, [512, 1024, 4]"), "fork-n.yaml", known=known(MHSA="tutorial"))
    (w,) = [f for f in r.warnings if f.rule == "foreign-row"]
    assert "width=512 and height=1024 look like channel counts" in w.message and "--replace-foreign" in w.message


# Issue 22 D.1: scale rows as the target's parse_model unpacks them.
FOUR = MODEL.replace("n: [1.0, 0.25, 1024]", "n: [1.0, 0.25, 1024, 0.5]").replace("ROW", "1, MHSA, [14, 14, 4]")
THREE = MODEL.replace("ROW", "1, MHSA, [14, 14, 4]")


def test_the_lint_reads_scale_rows_as_parse_model_unpacks_them():
    from mhsa_patch.modelyaml.lint import scale_unpack

    unpack = scale_unpack(ast.parse(tasks().replace(
        "    for i,", "    depth, width, max_channels, threshold = scales[scale]\n    for i,")))
    assert unpack == ("depth", "width", "max_channels", "threshold")
    fork = dataclasses.replace(known(MHSA="tutorial"), scale_names=unpack)
    stock = dataclasses.replace(known(MHSA="tutorial"), scale_names=("depth", "width", "max_channels"))
    ok = lint_text(FOUR, "fork-n.yaml", known=fork)
    assert ok.error is None and ok.mhsa[0].call() == "MHSA(n_dims=64, width=14, height=14, heads=4, pos_emb=False)"
    # the other way round, each says why the target's parse_model fails on it
    for text, k, got, want in ((THREE, fork, 3, 4), (FOUR, stock, 4, 3)):
        err = lint_text(text, "fork-n.yaml", known=k).error
        assert err.rule == "scales" and f"has {got} values" in err.message and f"unpacks {want} (" in err.message
    # without the target's word (no parse_model read), a fourth value is no reason to say the model does not build
    assert lint_text(FOUR, "fork-n.yaml").error is None
    starred = dataclasses.replace(fork, scale_names=("depth", "width", "max_channels", "*rest"))
    assert lint_text(FOUR, "fork-n.yaml", known=starred).error is None
    assert lint_text(THREE, "fork-n.yaml", known=starred).error is None
