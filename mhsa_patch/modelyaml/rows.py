"""A model config as text: its lines, its layer rows and where each sits, checked against what PyYAML reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from mhsa_patch.errors import PatchError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same results, faster


def load_yaml(text: str):
    """``yaml.safe_load`` (with libyaml's loader when available)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader


@dataclass(frozen=True)
class Row:
    """One layer row of the base file: parsed fields and where it sits in the text."""

    index: int
    line: int  # 0-based line number in the text
    section: str  # "backbone" or "head"
    from_: int | list[int]
    repeats: int
    module: str
    args: list


def _bracket_end(text: str, start: int) -> int:
    """Index just past the flow sequence that opens at ``text[start] == '['`` (quote aware), or -1."""
    depth, quote = 0, ""
    for k in range(start, len(text)):
        ch = text[k]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return k + 1
    return -1


ROW_RE = re.compile(r"^(?P<indent>\s*)-\s*(?=\[)")
KEY_RE = re.compile(r"""^(?P<q>["']?)(?P<key>[A-Za-z_][\w-]*)(?P=q)\s*:(?P<rest>.*)$""")  # a top-level key, quoted or not
FROM_RE = re.compile(r"^\[\s*(?P<from>\[[^\[\]]*\]|-?\d+)\s*,")


@dataclass
class _Parsed:
    lines: list[str]
    newline: str
    final_newline: bool
    data: dict
    rows: list[Row]
    keys: dict  # top-level key -> line number
    comment_sep: str  # what separates a row from its comment in this file ("  " in 8.0.x, " " later)


def parse_base(text: str, where: str) -> _Parsed:
    """Split a model config into lines and layer rows, checking the text agrees with what PyYAML reads."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise PatchError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("backbone", "head")):
        raise PatchError(f"{where}: not a model config (no backbone/head lists)")
    newline = "\r\n" if "\r\n" in text else "\n"
    final_newline = text.endswith(newline)
    lines = text.split(newline)
    if final_newline:
        lines = lines[:-1]
    keys: dict[str, int] = {}
    rows: list[Row] = []
    seps: dict[str, int] = {}
    section = None
    for no, line in enumerate(lines):
        km = KEY_RE.match(line)
        if km:
            keys[km.group("key")] = no
            section = km.group("key")
            continue
        rm = ROW_RE.match(line)
        if not rm or section not in ("backbone", "head"):
            continue
        start = rm.end()
        end = _bracket_end(line, start)
        if end < 0:
            raise PatchError(f"{where}:{no + 1}: cannot read the layer row (a row must be one flow list on one line)")
        rest = line[end:]
        if rest.strip() and not rest.strip().startswith("#"):
            raise PatchError(f"{where}:{no + 1}: unexpected text after the layer row")
        if rest.strip():
            sep = rest[: len(rest) - len(rest.lstrip())]
            seps[sep] = seps.get(sep, 0) + 1
        try:
            f, n, m, args = load_yaml(line[start:end])
        except (yaml.YAMLError, ValueError, TypeError):
            raise PatchError(f"{where}:{no + 1}: a layer row must be [from, repeats, module, args]") from None
        rows.append(Row(len(rows), no, section, f, n, str(m), args))
    layers = data["backbone"] + data["head"]
    if len(rows) != len(layers) or any([r.from_, r.repeats, r.module, r.args] != list(l) for r, l in zip(rows, layers)):
        raise PatchError(f"{where}: unexpected layout (the layer rows read as text differ from the YAML)")
    comment_sep = max(seps, key=seps.get) if seps else " "
    return _Parsed(lines, newline, final_newline, data, rows, keys, comment_sep)


def _froms(f) -> list[int]:
    return [f] if isinstance(f, int) else list(f)


def _format_from(f) -> str:
    return str(f) if isinstance(f, int) else "[" + ", ".join(str(x) for x in f) + "]"
