"""Issue 15 F: the output examples in docs/ are the tool's real output, so they cannot drift.

An example is a fenced block right after a line ``<!-- generated: NAME (tests/test_docs_examples.py) -->``. Each
test makes the real output for its NAME on a copy of the latest pinned release and compares it with the block:

- ``status-json`` (docs/status.md): ``status --json`` on a patched copy, as data (the block is JSON);
- ``lint-summary`` (docs/check.md): ``check yolov8n-MHSA.yaml --lint-only`` on the tutorial's file;
- ``check-summary`` (docs/check.md): ``check yolov8n-MHSA.yaml --train``, the tool's own lines (see
  ``check_summary``), with every decimal number (timings, latencies, losses) left out of the comparison. Its test
  is in test_check.py (``test_check_summary_example_is_real``), beside the other test that reads the same run: a
  run shared through a cache is shared only within one worker of ``pytest -n 2 --dist loadfile``.

``MHSA_PATCH_UPDATE_DOCS=1 python -m pytest tests/test_docs_examples.py`` (and ``tests/test_check.py -k example`` for
the check example) rewrites the blocks from the real output instead of comparing, and skips each test, saying what it
did: an update run never passes, since it compared nothing. Run it after changing what a command prints, review the
diff, commit the docs, and run the tests again without it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import releases
from helpers import ROOT, cli

UPDATE = os.environ.get("MHSA_PATCH_UPDATE_DOCS") == "1"
MARKER = re.compile(r"^<!-- generated: ([\w-]+) \(tests/test_docs_examples\.py\) -->$")


def find_block(path: Path, name: str) -> tuple[list[str], int, int]:
    """The file's lines and the [start, end) line range of the block marked ``name`` (its content lines)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if m and m.group(1) == name:
            assert lines[i + 1].startswith("```"), f"{path}: the marker of {name} is not followed by a code block"
            end = next(k for k in range(i + 2, len(lines)) if lines[k].startswith("```"))
            return lines, i + 2, end
    raise AssertionError(f"{path}: no example marked {name}")


def check_example(path: Path, name: str, real: str, same, *, update: bool = UPDATE) -> None:
    """Compare the block with ``real`` (``same(doc, real)``); with ``update`` (MHSA_PATCH_UPDATE_DOCS=1), write
    ``real`` into it instead and skip the test (an update compares nothing, so it never passes)."""
    lines, start, end = find_block(path, name)
    doc = "\n".join(lines[start:end])
    if update:
        if same(doc, real):  # equal but for what is left out of the comparison: keep the measured numbers
            pytest.skip(f"MHSA_PATCH_UPDATE_DOCS=1: {path.name}'s {name} example is already the tool's output")
        path.write_text("\n".join([*lines[:start], real, *lines[end:]]), encoding="utf-8")
        pytest.skip(f"MHSA_PATCH_UPDATE_DOCS=1: rewrote {path.name}'s {name} example; review and commit it, then run "
                    f"the tests again without MHSA_PATCH_UPDATE_DOCS")
    assert same(doc, real), (
        f"{os.path.relpath(path, ROOT)}: the {name} example is not what the tool prints now; regenerate it with "
        f"MHSA_PATCH_UPDATE_DOCS=1 python -m pytest {Path(__file__).relative_to(ROOT)}\n--- the tool prints:\n{real}"
    )


def test_update_mode_rewrites_the_example_then_skips(tmp_path):
    """Issue 22 A.8: MHSA_PATCH_UPDATE_DOCS=1 writes the tool's output into the doc and skips, whether it rewrote the
    block or found it up to date; it never passes. Without it, a stale block fails."""
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- generated: demo (tests/test_docs_examples.py) -->\n```text\nold output\n```\nafter\n",
                   encoding="utf-8")
    with pytest.raises(pytest.skip.Exception, match="rewrote doc.md's demo example"):
        check_example(doc, "demo", "new output", str.__eq__, update=True)
    assert doc.read_text(encoding="utf-8") == (
        "intro\n<!-- generated: demo (tests/test_docs_examples.py) -->\n```text\nnew output\n```\nafter\n"
    )
    with pytest.raises(pytest.skip.Exception, match="already the tool's output"):
        check_example(doc, "demo", "new output", str.__eq__, update=True)
    check_example(doc, "demo", "new output", str.__eq__, update=False)  # the comparison passes on the rewritten doc
    with pytest.raises(AssertionError, match="the demo example is not what the tool prints now"):
        check_example(doc, "demo", "newer output", str.__eq__, update=False)


# -- status --json ----------------------------------------------------------------------------------------------------


def compact_json(report: dict) -> str:
    """``status --json`` as the docs show it: one line per key, per file and per piece (the same data)."""
    out = ["{"]
    items = list(report.items())
    for k, (key, value) in enumerate(items):
        comma = "," if k < len(items) - 1 else ""
        if key == "files" and value:
            out.append(f'  "files": {{')
            files = list(value.items())
            for j, (rel, entry) in enumerate(files):
                head = {k2: v2 for k2, v2 in entry.items() if k2 != "pieces"}
                out.append(f"    {json.dumps(rel)}: {json.dumps(head)[:-1]}, \"pieces\": [")
                pieces = entry.get("pieces", [])
                out += [f"      {json.dumps(p)}{',' if n < len(pieces) - 1 else ''}" for n, p in enumerate(pieces)]
                out.append(f"    ]}}{',' if j < len(files) - 1 else ''}")
            out.append(f"  }}{comma}")
        else:
            out.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    out.append("}")
    return "\n".join(out)


def test_status_json_example_is_real(tmp_path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"  # shown as /venv/lib/python3.11/...
    pkg = releases.copy_release(releases.LATEST, site)
    assert cli("apply", "--target", str(pkg)).exit_code == 0
    r = cli("status", "--json", "--target", str(pkg))
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.replace(str(tmp_path), ""))
    check_example(ROOT / "docs" / "status.md", "status-json", compact_json(report),
                  lambda doc, real: json.loads(doc) == json.loads(real))


def test_status_user_layer_example_is_real(tmp_path):
    """One entry of ``user_layers`` (docs/status.md): the gallery's ECA, applied from /proj/layers/eca.py."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    pkg = releases.copy_release(releases.LATEST, site)
    layer = tmp_path / "proj" / "layers" / "eca.py"  # shown as /proj/layers/eca.py
    layer.parent.mkdir(parents=True)
    layer.write_bytes((ROOT / "examples" / "layers" / "eca.py").read_bytes())
    assert cli("apply", "--target", str(pkg), "--layer", str(layer)).exit_code == 0
    r = cli("status", "--json", "--target", str(pkg))
    assert r.exit_code == 0, r.output
    (entry,) = json.loads(r.stdout.replace(str(tmp_path), ""))["user_layers"]
    check_example(ROOT / "docs" / "status.md", "status-user-layer", json.dumps(entry, indent=2),
                  lambda doc, real: doc.strip() != "" and json.loads(doc) == json.loads(real))


# -- check --lint-only -------------------------------------------------------------------------------------------------


def test_lint_summary_example_is_real(tmp_path, workdir):
    pkg = releases.copy_release(releases.LATEST, tmp_path / "site")
    assert cli("apply", "--target", str(pkg)).exit_code == 0
    assert cli("gen-yaml", "--scale", "n", "--target", str(pkg)).exit_code == 0
    (yaml_file,) = workdir.glob("*.yaml")
    r = cli("check", yaml_file.name, "--lint-only", "--target", str(pkg))
    assert r.exit_code == 0, r.output
    lines = r.stdout.rstrip("\n").split("\n")
    real = "\n".join(lines[next(i for i, ln in enumerate(lines) if ln.startswith("Lint ")):])  # after the banner
    check_example(ROOT / "docs" / "check.md", "lint-summary", real, str.__eq__)


# -- check --train -----------------------------------------------------------------------------------------------------

NUMBER = re.compile(r"\d+\.\d+")  # timings, latencies, losses, ratios: they differ from run to run


def check_summary(output: str, added: set[int]) -> str:
    """The tool's own lines of a ``check`` run: its progress lines, the layer table with its header and the rows
    around the added layers (``  ...`` for the others), and the summary. Ultralytics' own trainer output (shown
    with ``--verbose`` where the CLI has it) is left out; the banner with the package's path is dropped."""
    lines = [ln.rstrip() for ln in output.rstrip("\n").split("\n") if "\x1b" not in ln and "\r" not in ln]
    header = max(i for i, ln in enumerate(lines) if re.match(r"^\s+from\s+n\s+params\s+GFLOPs\s+module", ln))
    out = [ln for ln in lines[:header] if ln.startswith(("  ✔ ", "  … ", "mhsa-patch: ", "ERROR", "WARNING"))]
    out.append(lines[header])
    k = header + 1
    while k < len(lines) and re.match(r"^\s*\d+\s", lines[k]):
        index = int(lines[k].split()[0])
        if any(abs(index - a) <= 1 for a in added):
            out.append(lines[k])
        elif out[-1] != "  ...":
            out.append("  ...")
        k += 1
    return "\n".join(out + lines[k:])
