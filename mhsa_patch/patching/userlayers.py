"""The user's own layers of one target (``apply --layer``): what the journal records of each, and the file each gets.

Two kinds:

* ``file``: a class from the user's Python file. Its text (the class, the helpers and imports it needs: see
  :mod:`.usersource`) goes into a module of its own, ``ultralytics/nn/modules/user_<Name>.py``, which
  ``nn/modules/__init__.py`` imports (``from .user_ECA import ECA  # mhsa-patch``). The class's pickled path is
  therefore ``ultralytics.nn.modules.user_ECA.ECA``: it depends on the class's name alone, never on the machine, the
  install location, the user's file path or the order in which layers were applied, so a checkpoint trained with it
  loads wherever the same file was applied.
* ``stock``: a class ultralytics ships but ``parse_model`` does not read (``CBAM``): only its import into
  ``nn/tasks.py`` and its ``parse_model`` branch are added; the class stays where ultralytics defines it.

Every module file the tool writes starts with one header line that carries the SHA-256 of the lines below it, so a
file at that path is the tool's, unedited, exactly when the hash checks out: revert deletes only such a file (one
that was edited is moved aside), also without a journal or after an interrupted run.

A record read from the journal is untrusted input: :class:`UserLayer` validates every field on construction (a name
that is an identifier, a file path the record's name alone determines, a text that matches its own header hash),
as :mod:`.journal` does for the rest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Optional

from mhsa_patch.patching.signature import CHANNELS, READS, RULES
from mhsa_patch.patching.usersource import IDENTIFIER_MAX, is_identifier

PREFIX = "user_"
FOLDER = "nn/modules"
KINDS = ("file", "stock")
MAX_TEXT = 2**20
MAX_PATH = 4096
HEADER_RE = re.compile(r"# mhsa-patch: user layer ([A-Za-z_][A-Za-z0-9_]*) \(sha256 ([0-9a-f]{64}) of the lines below\);")
HEADER = "# mhsa-patch: user layer {name} (sha256 {digest} of the lines below); 'mhsa-patch revert' removes this file"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_STOCK_FILE = re.compile(r"nn/modules/[A-Za-z_][A-Za-z0-9_]*\.py\Z")
_KEYS = ("name", "kind", "reads", "source", "source_sha256", "class_name", "text", "defined_in")


def module_rel(name: str) -> str:
    """``ECA`` -> ``nn/modules/user_ECA.py`` (relative to the package)."""
    return f"{FOLDER}/{PREFIX}{name}.py"


def module_name(name: str) -> str:
    """``ECA`` -> ``user_ECA``, the submodule of ``ultralytics.nn.modules``."""
    return f"{PREFIX}{name}"


def class_path(name: str, package: str = "ultralytics") -> str:
    """The path a checkpoint pickles: ``ultralytics.nn.modules.user_ECA.ECA``."""
    return f"{package}.nn.modules.{module_name(name)}.{name}"


def file_text(name: str, body: str) -> str:
    """The module file: the header (with the hash of ``body``), then ``body``."""
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return HEADER.format(name=name, digest=digest) + "\n" + body


def verified(text: str) -> Optional[str]:
    """The layer name of a module file whose header hash matches the lines below it (None: not the tool's, or
    edited since it was written)."""
    first, sep, body = text.partition("\n")
    m = HEADER_RE.match(first)
    if not m or not sep or hashlib.sha256(body.encode("utf-8")).hexdigest() != m.group(2):
        return None
    return m.group(1)


def _check_str(what: str, value: Any, limit: int) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, not a string")
    if len(value) > limit or "\x00" in value:
        raise ValueError(f"{what} is longer than {limit} characters or holds a NUL")


@dataclass(frozen=True)
class UserLayer:
    """One user layer of a target, as the journal records it. Construction validates every field."""

    name: str  # the registered name: the class in YAMLs, __all__, parse_model
    kind: str  # "file" or "stock"
    reads: str  # signature.READS: how parse_model reads its rows
    source: str = ""  # file: the user's file (absolute path) when applied; "" when not known (found without a journal)
    source_sha256: str = ""  # file: SHA-256 of that file's bytes when applied ("" when not known)
    class_name: str = ""  # file: the class's name in the user's file (differs from name with --as)
    text: str = ""  # file: the module file's whole text, header included
    defined_in: str = ""  # stock: the file of the package that defines the class (nn/modules/conv.py)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not is_identifier(self.name):
            raise ValueError(f"user layer name {str(self.name)[:IDENTIFIER_MAX]!r} is not a Python identifier")
        if self.kind not in KINDS:
            raise ValueError(f"user layer {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.reads not in READS:
            raise ValueError(f"user layer {self.name}: reads {self.reads!r} is not one of {', '.join(READS)}")
        _check_str(f"user layer {self.name}: source", self.source, MAX_PATH)
        _check_str(f"user layer {self.name}: class_name", self.class_name, IDENTIFIER_MAX)
        _check_str(f"user layer {self.name}: text", self.text, MAX_TEXT)
        _check_str(f"user layer {self.name}: defined_in", self.defined_in, MAX_PATH)
        _check_str(f"user layer {self.name}: source_sha256", self.source_sha256, 64)
        if self.source_sha256 and not _HEX64.match(self.source_sha256):
            raise ValueError(f"user layer {self.name}: source_sha256 is not a SHA-256 hex digest")
        if self.class_name and not is_identifier(self.class_name):
            raise ValueError(f"user layer {self.name}: class_name is not a Python identifier")
        if self.kind == "file":
            if verified(self.text) != self.name:
                raise ValueError(f"user layer {self.name}: text does not match its own header (name and sha256)")
            if self.defined_in:
                raise ValueError(f"user layer {self.name}: defined_in is for stock layers only")
        else:
            if self.text or self.source or self.source_sha256:
                raise ValueError(f"user layer {self.name}: a stock layer has no text, source or source_sha256")
            if not _STOCK_FILE.match(self.defined_in):
                raise ValueError(f"user layer {self.name}: defined_in {self.defined_in[:80]!r} is not nn/modules/NAME.py")

    # -- what it puts where --------------------------------------------------------------------------------------------

    @property
    def rel(self) -> Optional[str]:
        """The module file the tool writes for it (None: a stock layer has none)."""
        return module_rel(self.name) if self.kind == "file" else None

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def body(self) -> str:
        return self.text.partition("\n")[2]

    @property
    def module(self) -> str:
        """The submodule of ``ultralytics.nn.modules`` that defines the class."""
        if self.kind == "file":
            return module_name(self.name)
        return self.defined_in.rsplit("/", 1)[1][:-3]

    @property
    def reading(self) -> str:
        """The reading of ``patches/readings.py`` its parse_model branch gives."""
        return RULES[self.reads][0]

    @property
    def rule(self) -> str:
        return RULES[self.reads][1]

    @property
    def label(self) -> str:
        """What a person reads: ``ECA (examples/layers/eca.py)``, ``CBAM (ultralytics' own)``."""
        return f"{self.name} (ultralytics' own, {self.defined_in})" if self.kind == "stock" else self.name

    @property
    def class_source(self) -> str:
        """The text that defines the class, for comparing a fork's class of the same name with it."""
        return self.body

    def layer(self):
        """The layer for the edits (``patching.layers.Layer``)."""
        from mhsa_patch.patching.layers import RULES_FILE, Layer, _read

        origin = f"the one in {self.source}" if self.source else f"the user layer {self.name}"
        return Layer(
            name=self.name,
            summary=f"user layer {self.name}" if self.kind == "file" else f"ultralytics' {self.name} registered",
            class_names=(self.name,),
            class_source=self.body,
            rule_source=_read(RULES_FILE),
            rule=self.rule,
            kind=self.kind,
            module=self.module,
            origin=origin,
            reading=self.reading,
        )

    def spec(self):
        """The layer as ``patches.LayerSpec`` describes the tool's own: how gen-yaml, the lint and ablate use it."""
        from mhsa_patch.patches import LayerSpec

        base = dict(name=self.name, source="", parse_model_rule=self.rule, summary=f"user layer {self.name}",
                    reading=self.reading)
        if self.reads == "csp":
            return LayerSpec(
                **base, placement="replace", replaces=("C2f", "C3k2"), restore_args=("{c2}", True),
                channels="scaled", row_args=("{c2}",),
                note=f"{self.name} (a CSP block) takes the place of the backbone's last C2f or C3k2",
            )  # fmt: skip
        channels = CHANNELS[self.reads]
        row_args = ("{c2}",) if channels == "scaled" else ()
        return LayerSpec(
            **base, channels=channels, row_args=row_args, options=("at",), row_note="{stage}: {channels} channels",
            note=f"{self.name} goes in as a new row after --at (P5 by default)",
        )  # fmt: skip

    # -- the journal -----------------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in _KEYS}

    @classmethod
    def from_json(cls, data: Any) -> "UserLayer":
        if not isinstance(data, dict):
            raise ValueError("user_layers entry is not an object")
        missing = [k for k in ("name", "kind", "reads") if k not in data]
        extra = [k for k in data if k not in _KEYS]
        if missing:
            raise ValueError(f"user_layers entry lacks {', '.join(missing)}")
        if extra:
            raise ValueError(f"user_layers entry has an unknown key {ascii(extra[0])[:60]}")
        return cls(**{k: data[k] for k in _KEYS if k in data})


def check_list(layers: Any) -> tuple[UserLayer, ...]:
    """A journal's ``user_layers``: a list of valid records with distinct names (and distinct module files, also
    on a file system that ignores case)."""
    if not isinstance(layers, (list, tuple)):
        raise ValueError("user_layers is not a list")
    out = tuple(x if isinstance(x, UserLayer) else UserLayer.from_json(x) for x in layers)
    seen: set[str] = set()
    for u in out:
        if u.name.lower() in seen:
            raise ValueError(f"user_layers names {u.name} twice (or twice up to case)")
        seen.add(u.name.lower())
    return out


def discover(target, read) -> tuple[UserLayer, ...]:
    """The user layers a package holds, read from its files alone (no journal: deleted by hand, or interrupted):
    each module file ``nn/modules/user_<Name>.py`` whose header checks out, then each name of a marked parse_model
    branch that is neither the tool's nor such a file's (a stock class registered: CBAM). ``read(rel)`` -> bytes or
    None (confined reads)."""
    import ast
    import os

    from mhsa_patch.patches import LAYERS

    builtin = {n for s in LAYERS for n in (*s.helpers, s.name)}
    found: list[UserLayer] = []
    tasks = read("nn/tasks.py")
    try:
        tree = ast.parse(tasks) if tasks is not None else None
    except (SyntaxError, ValueError):
        tree = None

    names = listing(target)
    for fname in names:
        if not (fname.startswith(PREFIX) and fname.endswith(".py")):
            continue
        data = read(f"{FOLDER}/{fname}")
        if data is None:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        name = verified(text)
        if name is None or module_rel(name) != f"{FOLDER}/{fname}" or name in builtin:
            continue
        found.append(UserLayer(name, "file", _branch_reads(tree, name), text=text))
    func = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model"), None) if tree else None
    if func is not None:
        lines = tasks.decode("utf-8", "replace").splitlines()
        have = {u.name for u in found} | builtin
        for node in ast.walk(func):
            if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1):
                continue
            if not (isinstance(node.test.ops[0], ast.Is) and isinstance(node.test.left, ast.Name) and node.test.left.id == "m"):
                continue
            right = node.test.comparators[0]
            if isinstance(right, ast.Name) and right.id not in have and "# mhsa-patch" in lines[node.lineno - 1]:
                defined = _stock_file(target, read, right.id)
                if defined is not None:
                    found.append(UserLayer(right.id, "stock", _branch_reads(tree, right.id), defined_in=defined))
                    have.add(right.id)
    return tuple(found)


def listing(target) -> list[str]:
    """The names in ``nn/modules/``, sorted; none where that folder resolves outside the package (a link)."""
    import os

    from mhsa_patch.errors import PatchError
    from mhsa_patch.patching.atomic import confine

    try:
        confine(target.package, target.file(f"{FOLDER}/__init__.py"))
        return sorted(os.listdir(target.file(FOLDER)))
    except (OSError, PatchError):
        return []


def _branch_reads(tree, name: str) -> str:
    """The reading (``--reads``) of the tool's marked branch for ``name`` in parse_model (``input`` where none is
    found or its body is no rule's): what a layer found without a journal was applied with."""
    import ast

    from mhsa_patch.patching.layers import RULES_FILE, _read

    rules = {
        n.name: ast.dump(ast.Module(body=[s for s in n.body[1:] if not isinstance(s, ast.Return)], type_ignores=[]))
        for n in ast.parse(_read(RULES_FILE)).body
        if isinstance(n, ast.FunctionDef)
    }
    func = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model"), None) if tree else None
    for node in ast.walk(func) if func is not None else ():
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "m"
            and isinstance(node.test.comparators[0], ast.Name)
            and node.test.comparators[0].id == name
        ):
            body = ast.dump(ast.Module(body=node.body, type_ignores=[]))
            for reads, (_, rule) in RULES.items():
                if rules.get(rule) == body:
                    return reads
    return "input"


def _stock_file(target, read, name: str) -> Optional[str]:
    """The ``nn/modules/*.py`` file of the package that defines class ``name`` at its top level (None: none does)."""
    import ast
    import os

    files = [f for f in listing(target) if f.endswith(".py") and not f.startswith(PREFIX)]
    word = re.compile(rf"\bclass\s+{re.escape(name)}\b".encode())
    for fname in files:
        rel = f"{FOLDER}/{fname}"
        data = read(rel)
        if data is None or not word.search(data):
            continue
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError):
            continue
        if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
            return rel
    return None


def stock_class(target, read, name: str) -> Optional[tuple[str, int, Any]]:
    """``(rel, line, ast.ClassDef)`` of ultralytics' own class ``name`` in ``nn/modules`` (None: no such class)."""
    import ast

    rel = _stock_file(target, read, name)
    if rel is None:
        return None
    tree = ast.parse(read(rel))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    return rel, node.lineno, node


def init_args(source: str, name: str):
    """The ``ast.arguments`` of class ``name``'s ``__init__`` in ``source`` (a module file the tool wrote, or its
    body), following the file's own bases where the class has none; None where the text does not show one."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    seen = set()
    while name in classes and name not in seen:
        seen.add(name)
        cls = classes[name]
        init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is not None:
            return init.args
        bases = [b.id for b in cls.bases if isinstance(b, ast.Name) and b.id in classes]
        if not bases:
            return None
        name = bases[0]
    return None
