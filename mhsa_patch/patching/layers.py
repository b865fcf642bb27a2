"""The layers the tool inserts, loaded from the ``patches/`` folder (shipped as ``mhsa_patch.patches``).

The folder's ``__init__.py`` declares each layer as data; this module reads the class source and the
parse_model rule as text and hands libcst nodes to the edits, parsed with the host file's own config so the
inserted code follows the host's newline and indentation. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import libcst as cst

from mhsa_patch.errors import PatchError
from mhsa_patch.patches import LAYERS, LayerSpec
from mhsa_patch.patches import layer_names as spec_names

RULES_FILE = "parse_model_rules.py"


def _read(name: str) -> str:
    return resources.files("mhsa_patch.patches").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Layer:
    name: str
    summary: str
    class_names: tuple[str, ...]  # the classes copied into conv.py, in order; the layer's own class is the last
    class_source: str
    rule_source: str
    rule: str
    _cache: dict = field(default_factory=dict, compare=False, repr=False)
    # "builtin": a layer of patches/, its classes appended to conv.py; "file": a user's layer, in a module file of its
    # own (patching/userlayers.py); "stock": ultralytics' own class, registered only (import and branch in tasks.py)
    kind: str = "builtin"
    module: str = "conv"  # the submodule of ultralytics.nn.modules that defines the class
    origin: str = "the tutorial's"  # what a same-named hand-written class is compared with, in refusals
    reading: str = ""  # the reading (patches/readings.py) of its rule; "" for the tool's own: its LayerSpec's

    def _parse(self, source: str, host: cst.Module) -> cst.Module:
        key = (id(source), host.default_newline, host.default_indent)
        if key not in self._cache:
            text = source.replace("\r\n", "\n").replace("\n", host.default_newline)
            self._cache[key] = cst.parse_module(text, config=host.config_for_parsing)
        return self._cache[key]

    def class_nodes(self, host: cst.Module) -> list[cst.ClassDef]:
        """The ``class`` statements the layer inserts, in order (the patch file's module-level imports are not copied)."""
        by_name = {
            stmt.name.value: stmt for stmt in self._parse(self.class_source, host).body if isinstance(stmt, cst.ClassDef)
        }
        missing = [name for name in self.class_names if name not in by_name]
        if missing:
            raise PatchError(f"class {', '.join(missing)} not found in the patch source of {self.name}")
        return [by_name[name] for name in self.class_names]

    def rule_body(self, host: cst.Module) -> list[cst.BaseStatement]:
        """The statements of the parse_model rule function, without its docstring and its ``return``."""
        for stmt in self._parse(self.rule_source, host).body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == self.rule:
                body = list(stmt.body.body)
                if body and _is_docstring(body[0]):
                    body = body[1:]
                body = [s for s in body if not (isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], cst.Return))]
                return [s.with_changes(leading_lines=()) for s in body]
        raise PatchError(f"parse_model rule {self.rule} not found in {RULES_FILE}")


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _load(spec: LayerSpec) -> Layer:
    return Layer(
        name=spec.name,
        summary=spec.summary,
        class_names=(*spec.helpers, spec.name),
        class_source=_read(spec.source),
        rule_source=_read(RULES_FILE),
        rule=spec.parse_model_rule,
    )


@lru_cache(maxsize=None)
def layers() -> tuple[Layer, ...]:
    """The tool's own layers (patches/), in the order apply inserts them. A target's user layers come after them
    (``patching.userlayers``)."""
    return tuple(_load(s) for s in LAYERS)


@lru_cache(maxsize=None)
def layer_names() -> frozenset[str]:
    """Every layer's name: what the tool may put into ``__all__``, imports and ``parse_model``."""
    return frozenset(spec_names())
