"""Lint a model YAML as ``parse_model`` would read it, without building it (the first step of ``check``).

Pure logic over the file's text: the layer graph is replayed (:mod:`.graph`: channels, strides, readers); nothing
is built, torch and ultralytics are never imported. The one exception reads files: :func:`known_modules` takes
the module names the target's ``nn/tasks.py`` binds (through ``ast``, no import) and those of ``torch.nn``.

The result is a :class:`LintResult`: one :class:`MhsaCall` per MHSA row (the resolved call and the feature map
it runs on), warnings (the model builds, but not as the file seems to mean) and at most one error (the model would
not build). Every message names the layer and, for warnings, a fix. Nothing here prints.

Rules (``Finding.rule``):

* ``mhsa-args``: MHSA arguments that cannot mean what they look like (``[1024, 8]``: width and height are ignored
  without pos_emb, the heads stay 4);
* ``pos-grid``: pos_emb tables of another size than the feature map at ``imgsz`` (resized on every pass);
* ``dead-layer``: a layer whose output nothing reads, neither a later layer nor the output head;
* ``head-input``: an output head (Detect, Segment, ...) reading a layer that a block of the same stride continues
  (a Concat instead of the C2f after it: the usual trace of a missing renumbering);
* ``index-comment``: ``# 13`` comments that disagree with the row's position;
* ``scales``: no ``scales`` section, or a name that selects another scale than the file (or its ``scale:`` key)
  says; ``sibling``: a scale-less sibling that older releases load in place of the file;
* errors (``error``): unknown modules, a ``from`` pointing forward or out of range, a Concat of maps with different
  strides, heads that do not divide the channels, a scale the file lacks, malformed rows.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from mhsa_patch.errors import PatchError
from mhsa_patch.modelyaml.graph import (
    DOWNSAMPLERS,
    HEAD_MODULES,
    OPAQUE_MODULES,
    SCALE_NAMES,
    SCALED_MODULES,
    replay,
    scale_values,
    stage_label,
)
from mhsa_patch.modelyaml.naming import guess_scale, unified_path
from mhsa_patch.modelyaml.rows import FROM_RE, ROW_RE, Row, _bracket_end, _format_from, _froms, load_yaml, parse_base
from mhsa_patch.patches import LAYERS
from mhsa_patch.patches.readings import reading
from mhsa_patch.patching.readings import param_defaults, param_names

MHSA_DEFAULTS = {"width": 14, "height": 14, "heads": 4, "pos_emb": False}  # MHSA(n_dims, width, height, heads, pos_emb)
# Output heads that read several feature maps (Classify reads one and is not checked for stage ends).
MULTI_HEADS = HEAD_MODULES - {"Classify"}
# ``# 13``, ``# 0-P1/2``, ``# 15 (P3/8-small)``: a layer index. Not ``# 1024 channels, 8 heads``.
INDEX_COMMENT_RE = re.compile(r"^#\s*(\d+)(?=\s*$|\s*\(|-|:)")
MAX_HEADS_LIKE = 32  # a lone small number in an MHSA row reads as a head count; larger ones as channels
# Layers that work through a side channel, not their output (WorldModel passes ImagePoolingAttn's to the head).
SIDE_EFFECT_MODULES = frozenset({"ImagePoolingAttn"})
# Upsampling layers: YAML position of the stride argument and its default (the stride divides by it).
UPSAMPLERS = {"ConvTranspose": (2, 2), "nn.ConvTranspose2d": (2, 1), "DWConvTranspose2d": (2, 1)}
POOLS = frozenset({"nn.MaxPool2d", "nn.AvgPool2d"})  # [kernel, stride=kernel, padding]
# Our layers whose args the lint explains as MHSA's [width, height, heads, pos_emb] (``LayerSpec.lint_args``).
ATTENTION_ROWS = frozenset(spec.name for spec in LAYERS if spec.lint_args == "attention")
# Our layers' parameter rules (``LayerSpec.params``), for the cost of a dead row.
PARAM_RULES = {spec.name: spec.params for spec in LAYERS if spec.params is not None}
LAYER_NAMES = frozenset(spec.name for spec in LAYERS)
# MHSA's width and height this large, without pos_emb, are channel counts written for another class named MHSA.
FOREIGN_LIKE = 128


def _as_tutorial(rd) -> bool:
    """A reading that calls the layer as the tutorial does: ``Layer(c1, *args)``."""
    return rd is not None and rd.lead == ("c1",) and rd.drop == 0


@dataclass(frozen=True)
class Finding:
    """One message: ``level`` is ``warning`` or ``error``; ``layer`` the row it is about (None: the file)."""

    level: str
    rule: str
    message: str
    layer: int | None = None


@dataclass(frozen=True)
class MhsaCall:
    """An MHSA row as parse_model calls it: ``MHSA(n_dims, width, height, heads, pos_emb)`` on a ``size`` map."""

    index: int
    n_dims: int | None
    width: object
    height: object
    heads: object
    pos_emb: object
    stride: int | None
    size: int | None  # the feature map's side at imgsz

    def call(self) -> str:
        n = "?" if self.n_dims is None else self.n_dims
        return (
            f"MHSA(n_dims={n}, width={self.width!r}, height={self.height!r}, heads={self.heads!r}, "
            f"pos_emb={self.pos_emb!r})"
        )

    def describe(self) -> str:
        """The call and the map it runs on; width and height marked unused without pos_emb (they size only the
        position tables), so that ``width=14`` on a 20×20 map does not read as a mismatch."""
        where = "?" if self.size is None else f"{self.size}×{self.size}"
        stage = f" ({stage_label(self.stride)})" if self.stride else ""
        unused = "" if self.pos_emb else ", width and height unused without pos_emb"
        return f"layer {self.index}: {self.call()} on {where}{stage}{unused}"


@dataclass(frozen=True)
class LayerCall:
    """A row of one of the patch's layers as the target's parse_model calls it, under the reading in force there."""

    index: int
    module: str
    values: tuple | None  # (parameter name, value) pairs of one call; None where the reading is not known
    blocks: int  # how many of them parse_model builds in a row (the row's repeats under a reading that keeps them)
    reading: str  # the reading, as status names it (docs/status.md), with the branch's line where hand-written
    stride: int | None
    size: int | None
    channels: tuple | None = None  # (in, out) for a user layer's row: what it gets and what parse_model records

    def call(self) -> str:
        if self.values is None:
            return f"{self.module}(...) (not known)"
        text = f"{self.module}({', '.join(f'{k}={v!r}' for k, v in self.values)})"
        return text + (f" ×{self.blocks} in a row" if self.blocks > 1 else "")

    def describe(self) -> str:
        where = "" if self.size is None else f" on {self.size}×{self.size}"
        stage = f" ({stage_label(self.stride)})" if self.stride else ""
        # width and height size only the position tables: without them, width=14 on a 20×20 map is no mismatch
        args = dict(self.values or ())
        unused = ", width and height unused without pos_emb" if args.get("pos_emb") is False and "width" in args else ""
        flow = ""
        if self.channels is not None:
            c_in, c_out = ("?" if c is None else c for c in self.channels)
            flow = f", {c_in} → {c_out} channels"
        return f"layer {self.index}: {self.call()}{where}{stage}{flow}{unused}, read as {self.reading}"


@dataclass(frozen=True)
class LintResult:
    """What the lint found in one model YAML."""

    name: str
    imgsz: int
    scale: str = ""  # the scale parse_model builds ('' without a scales section)
    layers: int = 0
    mhsa: tuple[MhsaCall, ...] = ()
    calls: tuple[LayerCall, ...] = ()  # every row of the patch's layers (MHSA and BoT3), under the target's reading
    added: tuple[str, ...] = ()  # the modules of the rows that are the patch's layers, in order
    findings: tuple[Finding, ...] = ()
    patched: bool | None = None  # whether the target already knows the patch's layers (None: not asked)
    apply_hint: str = "mhsa-patch apply"  # the command that patches the target (with --force on a fork)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def error(self) -> Finding | None:
        """The first reason the model would not build (at most one is reported)."""
        return next((f for f in self.findings if f.level == "error"), None)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "imgsz": self.imgsz,
            "scale": self.scale,
            "layers": self.layers,
            "mhsa": [{"index": m.index, "call": m.call(), "size": m.size, "stride": m.stride} for m in self.mhsa],
            "calls": [{"index": c.index, "module": c.module, "call": c.call(), "reading": c.reading} for c in self.calls],
            "warnings": [{"rule": f.rule, "layer": f.layer, "message": f.message} for f in self.warnings],
            "error": None if self.error is None else {"rule": self.error.rule, "layer": self.error.layer,
                                                       "message": self.error.message},
        }


@dataclass(frozen=True)
class KnownModules:
    """The module names a release's ``parse_model`` resolves: ``tasks.py``'s globals, the patch's layers, torch.nn.

    ``names`` is None when it cannot be told (a star import in tasks.py); ``nn`` None when torch is not found.
    """

    version: str
    names: frozenset | None
    nn: frozenset | None = None
    patched: bool | None = None  # whether tasks.py already binds the patch's layers (None: cannot tell)
    # layer -> (patches.readings.Reading or None where not known, its name as status gives it): how the target reads
    # the layer's rows once applied (a fork's reading that differs from the tool's stays: apply --force keeps it)
    readings: dict | None = None
    apply_hint: str = "mhsa-patch apply"  # the command that patches this target ('apply --force' on a fork)
    # what parse_model unpacks a ``scales`` row into (``depth, width, max_channels, threshold = scales[scale]`` on a
    # fork); None: not read (no target, or no such statement found), any row of at least three numbers is taken
    scale_names: tuple[str, ...] | None = None
    # the target's user layers (apply --layer): name -> (LayerSpec, positional parameter names, literal defaults)
    user: dict | None = None

    def unknown(self, module: str) -> bool:
        if module.startswith("nn."):
            return self.nn is not None and module[3:] not in self.nn
        if module.startswith("torchvision.ops."):
            return False  # resolved through torchvision at build time; not checked
        return self.names is not None and module not in self.names


def _module_globals(tree: ast.Module) -> frozenset | None:
    """Names bound at module level (imports, defs, classes, assignments), looking into if/try/with blocks."""
    names: set[str] = set()

    def visit(body) -> bool:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    if a.name == "*":
                        return False
                    names.add(a.asname or a.name.split(".")[0])
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            names.add(n.id)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for part in ("body", "orelse", "finalbody"):
                    if not visit(getattr(node, part, []) or []):
                        return False
                for h in getattr(node, "handlers", []) or []:
                    if not visit(h.body):
                        return False
        return True

    return frozenset(names) if visit(tree.body) else None


def _names_in(path: Path) -> frozenset | None:
    tree = _parse(path)
    return None if tree is None else _module_globals(tree)


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def scale_unpack(tree: ast.Module | None) -> tuple[str, ...] | None:
    """The names ``parse_model`` unpacks a ``scales`` row into: ``depth, width, max_channels = scales[scale]`` in
    every release, one more (``threshold``) or fewer on some forks; a starred name as ``*rest``. None where
    parse_model has no such statement (then nothing is said about a row's length)."""
    func = next((n for n in (tree.body if tree else ()) if isinstance(n, ast.FunctionDef) and n.name == "parse_model"),
                None)
    for node in ast.walk(func) if func is not None else ():
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple)):
            continue
        value = node.value
        if not (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) and value.value.id == "scales"):
            continue
        names = []
        for elt in node.targets[0].elts:
            if isinstance(elt, ast.Name):
                names.append(elt.id)
            elif isinstance(elt, ast.Starred) and isinstance(elt.value, ast.Name):
                names.append("*" + elt.value.id)
            else:
                return None
        return tuple(names)
    return None


def torch_nn_names() -> frozenset | None:
    """What ``torch.nn`` exports (``nn.Upsample`` ...), read from torch's sources (found, never imported)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    nn = Path(next(iter(spec.submodule_search_locations))) / "nn"
    modules = _names_in(nn / "modules" / "__init__.py")
    if modules is None:
        return None
    try:
        tree = ast.parse((nn / "__init__.py").read_bytes())
    except (OSError, SyntaxError, ValueError):
        return modules
    extra = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    return modules | frozenset(x for x in extra if x != "*")


def known_modules(target) -> KnownModules:
    """The modules ``target``'s parse_model knows, plus the patch's layers (which ``apply`` adds), and how it reads
    the layers' rows once patched."""
    tree = _parse(target.package / "nn" / "tasks.py")
    names = None if tree is None else _module_globals(tree)
    layers = {layer.name for layer in LAYERS}
    patched = None if names is None else layers <= names
    user = user_layer_info(target)
    if names is not None:
        names = names | layers | set(user)
    readings, hint = target_readings(target, user)
    if hint is not None:  # the engine's own word: a fork's hand-written import binds the names but is not the patch
        patched = hint == ""
    return KnownModules(version=target.version, names=names, nn=torch_nn_names(), patched=patched, readings=readings,
                        apply_hint=hint or "mhsa-patch apply", scale_names=scale_unpack(tree), user=user)


def user_layer_info(target) -> dict:
    """The target's user layers: name -> (LayerSpec, positional parameter names, literal defaults), the parameters
    read from the module text the tool installed (``ast``; the class is never imported)."""
    from mhsa_patch.patching.engine import user_layers
    from mhsa_patch.patching.userlayers import init_args

    out = {}
    for u in user_layers(target):
        text = u.body
        if u.kind == "stock":
            try:
                text = (target.package / u.defined_in).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
        a = init_args(text, u.name)
        names, defaults = (), {}
        if a is not None:
            params = (a.posonlyargs + a.args)[1:]
            names = tuple(p.arg for p in params)
            for p, d in zip(params[len(params) - len(a.defaults) :], a.defaults):
                try:
                    defaults[p.arg] = ast.literal_eval(d)
                except ValueError:
                    pass
        out[u.name] = (u.spec(), names, defaults)
    return out


def target_readings(target, user: dict | None = None) -> tuple[dict | None, str | None]:
    """(layer -> (Reading or None, name), apply hint) of ``target``: the hint is "" when the patch is applied,
    ``mhsa-patch apply --force`` where plain apply refuses (hand-written pieces), None where status cannot tell.
    ``user``: the target's user layers (:func:`user_layer_info`)."""
    from mhsa_patch.patches.readings import reading
    from mhsa_patch.patching import engine
    from mhsa_patch.patching.results import State

    try:
        st = engine.status(target, lines=False)
    except PatchError:
        return None, None
    out = {}
    specs = {s.name: s for s in LAYERS} | {name: info[0] for name, info in (user or {}).items()}
    for found in st.readings:
        spec = specs.get(found.layer)
        if spec is None:
            continue
        if found.differs:
            where = f"nn/tasks.py:{found.line}"
            out[found.layer] = (found.rule, f"'{found.name}' (the fork's branch at {where})")
        else:
            out[found.layer] = (reading(spec.reading), rule_name(spec, found.layer in (user or {})))
    hint = {State.APPLIED: "", State.CONFLICT: "mhsa-patch apply --force"}.get(st.state, "mhsa-patch apply")
    if st.state is State.CONFLICT and _refuses_force(target):
        hint = "mhsa-patch apply --replace-foreign"
    return out, hint


def rule_name(spec, user: bool) -> str:
    """How the lint names the tool's rule for a layer: ``'tutorial' (mhsa-patch's rule)``; for a user layer with the
    ``--reads`` it was applied with: ``--reads input ('tutorial', mhsa-patch's rule)``."""
    if not user:
        return f"'{spec.reading}' (mhsa-patch's rule)"
    from mhsa_patch.patching.signature import RULES

    reads = next(k for k, (name, _) in RULES.items() if name == spec.reading)
    return f"--reads {reads} ('{spec.reading}', mhsa-patch's rule)"


def _refuses_force(target) -> bool:
    """Whether ``apply --force`` refuses for a class named like a layer that is not the tool's (then only
    ``--replace-foreign`` works): read from the pieces found, as apply's plan reads them; no lock, no write."""
    from mhsa_patch.patching.atomic import read_confined
    from mhsa_patch.patching.filemodel import TargetFile
    from mhsa_patch.patching.target import TARGET_FILES

    try:
        return any(
            TargetFile(target, rel, read_confined(target.package, target.file(rel), 4 * 2**20)).foreign_classes()
            for rel in TARGET_FILES
        )
    except (PatchError, OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ the lint


def _resolve(a, data: dict):
    """A string argument as parse_model reads it: a local (``nc``) or a Python literal; else the string."""
    if not isinstance(a, str):
        return a
    local = {"nc": data.get("nc"), "kpt_shape": data.get("kpt_shape")}
    if a in local and local[a] is not None:
        return local[a]
    try:
        return ast.literal_eval(a)
    except (ValueError, SyntaxError):
        return a


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _rows_from_data(data: dict) -> list[Row]:
    """Rows without line numbers, for files whose layout the text reader does not follow (block-style rows)."""
    rows = []
    for section in ("backbone", "head"):
        for r in data[section]:
            k = len(rows)
            if not isinstance(r, list) or len(r) != 4:
                raise _Stop(Finding("error", "row", f"layer {k}: a layer row must be [from, repeats, module, args]", k))
            f, n, m, args = r
            rows.append(Row(k, -1, section, f, n, str(m), args))
    return rows


class _Stop(Exception):
    """A finding that ends the lint (the graph cannot be followed past it)."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding


def _row_text(row: Row, lines: list[str] | None, new_from=None, args: list | None = None) -> str:
    """The row as the file writes it (comment dropped), with its ``from`` (or MHSA's args) replaced."""
    flow = None
    if lines is not None and row.line >= 0:
        line = lines[row.line]
        m = ROW_RE.match(line)
        if m:
            end = _bracket_end(line, m.end())
            flow = line[m.end() : end] if end > 0 else None
    if flow is None or args is not None:
        a = row.args if args is None else args
        flow = f"[{_format_from(row.from_)}, {row.repeats}, {row.module}, [{', '.join(_fmt(x) for x in a)}]]"
    if new_from is not None:
        fm = FROM_RE.match(flow)
        if fm:
            flow = flow[: fm.start("from")] + _format_from(new_from) + flow[fm.end("from") :]
    return f"- {flow}"


def _fmt(x) -> str:
    return "True" if x is True else "False" if x is False else str(x)


def _conv_params(c1: int, c2: int, k=1, g=1) -> int | None:
    if not all(isinstance(v, int) for v in (c1, c2, k, g)) or g < 1:
        return None
    return c1 * c2 * k * k // g + 2 * c2  # conv weight (no bias) + BatchNorm weight and bias


def _params(row: Row, c1, c2, depth: float) -> int | None:
    """Parameters of a layer for the few modules whose count is cheap to write down (else None)."""
    if c1 is None or c2 is None or not _is_num(depth):
        return None
    n = max(round(row.repeats * depth), 1) if row.repeats > 1 else row.repeats
    a = row.args
    if row.module == "Conv":
        p = _conv_params(c1, c2, a[1] if len(a) > 1 else 1, a[4] if len(a) > 4 else 1)
        return None if p is None else p * max(n, 1)
    if row.module == "C2f":
        e = a[3] if len(a) > 3 else 0.5
        c = int(c2 * e)
        parts = [_conv_params(c1, 2 * c), _conv_params((2 + n) * c, c2)] + [_conv_params(c, c, 3)] * (2 * n)
        return None if None in parts else sum(parts)
    if row.module in PARAM_RULES:
        w, h, heads, pos = (list(a) + [14, 14, 4, False][len(a) :])[:4]
        if pos and not (_is_num(w) and _is_num(h)):
            return None
        return PARAM_RULES[row.module](c1, [int(w), int(h), heads, bool(pos)] if pos else list(a))
    return None


def lint_text(text: str, name: str, *, imgsz: int = 640, known: KnownModules | None = None) -> LintResult:
    """Lint the model YAML ``text`` as ultralytics would load it from a file called ``name`` (its scale comes from
    the name), at ``imgsz``. ``known``: the modules the target resolves (None: not checked)."""
    findings: list[Finding] = []
    out = {"name": name, "imgsz": imgsz, "patched": None if known is None else known.patched}
    if known is not None:
        out["apply_hint"] = known.apply_hint
    try:
        return _lint(text, name, imgsz, known, findings, out)
    except _Stop as stop:
        findings.append(stop.finding)
    except Exception as e:  # noqa: BLE001 - a file this lint cannot follow: say so, let the build decide
        findings.append(Finding("warning", "lint-failed", f"{name}: the lint could not follow this file "
                                                          f"({type(e).__name__}: {e}); the build will tell"))
    return LintResult(findings=tuple(findings), **out)


def _lint(text, name, imgsz, known, findings, out) -> LintResult:
    def warn(rule: str, msg: str, layer: int | None = None) -> None:
        findings.append(Finding("warning", rule, msg, layer))

    user = (known.user if known is not None else None) or {}
    layer_names_all = LAYER_NAMES | frozenset(user)

    def rule_of(module: str):
        """(Reading or None, its name) the target applies to the layer's rows; the tool's rule when not asked."""
        if known is not None and known.readings and module in known.readings:
            return known.readings[module]
        spec = user[module][0] if module in user else next(s for s in LAYERS if s.name == module)
        return reading(spec.reading), rule_name(spec, module in user)

    def params_of(module: str) -> tuple[tuple, dict]:
        if module in user:
            return user[module][1], user[module][2]
        return param_names(module), param_defaults(module)

    def stop(msg: str, layer: int | None = None, rule: str = "error"):
        raise _Stop(Finding("error", rule, msg, layer))

    # --- the file
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        stop(f"{name}: not a model YAML: not valid YAML ({str(e).splitlines()[0]})", rule="yaml")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("backbone", "head")):
        stop(f"{name}: not a model YAML (no backbone and head)", rule="yaml")
    lines = None
    try:
        parsed = parse_base(text, name)
        rows, lines = parsed.rows, parsed.lines
    except PatchError:
        rows = _rows_from_data(data)
    if not rows:
        stop(f"{name}: not a model YAML (no layers)", rule="yaml")
    out["layers"] = len(rows)

    # --- the scale, as ultralytics takes it: from the file name
    scales = data.get("scales")
    from_name = guess_scale(name)
    key = data.get("scale")
    scale = ""
    unpack = known.scale_names if known is not None and known.scale_names else None
    row_shape = f"[{', '.join(unpack or SCALE_NAMES)}]"
    if scales is not None and not isinstance(scales, dict):
        stop(f"{name}: 'scales' must map each scale to {row_shape}, got {scales!r}", rule="scales")
    if isinstance(scales, dict) and scales:
        have = ", ".join(map(str, scales))
        if from_name:
            if from_name not in scales:
                stop(f"{name}: ultralytics reads scale '{from_name}' from the name but the file's 'scales' has only "
                     f"{have} (KeyError: '{from_name}'): rename the file or add a row for '{from_name}'", rule="scales")
            scale = from_name
        else:
            scale = str(next(iter(scales)))
            if len(scales) > 1:
                warn("scales", f"{name} carries no scale in its name: ultralytics falls back to the first 'scales' "
                               f"row, '{scale}' (of {have}); fix: name it after the scale you mean "
                               f"(yolov8n-MHSA.yaml: the scale right after the model number) or keep only that row")
        if key is not None and str(key) != scale:
            warn("scales", f"{name}: the 'scale: {key}' key is ignored: ultralytics takes the scale from the file "
                           f"name and builds '{scale}'; fix: rename the file (or delete the key)")
    else:
        if "width_multiple" in data or "depth_multiple" in data:
            dm, wm = data.get("depth_multiple", 1.0), data.get("width_multiple", 1.0)
            how = f"depth_multiple={dm}, width_multiple={wm} with no max_channels"
        else:
            how = "depth 1.0, width 1.0 with no max_channels: every layer at full width, larger than x"
        said = f" (its name says '{from_name}')" if from_name else ""
        warn("scales", f"{name} has no 'scales' section: parse_model builds {how}{said}; fix: copy the 'scales' "
                       f"block of the config it came from (yolov8.yaml)")
    out["scale"] = scale
    scale_row = scales.get(scale) if isinstance(scales, dict) else None
    scale_names = unpack or SCALE_NAMES
    if scale_row is not None:
        # read as the target's parse_model unpacks it (a fork may unpack four values); without the target's word,
        # any row of three numbers or more (no release unpacks fewer)
        if not isinstance(scale_row, (list, tuple)):
            stop(f"{name}: the '{scale}' row of 'scales' must be a list {row_shape}, got {scale_row!r}", rule="scales")
        star = any(n.startswith("*") for n in scale_names)
        fits = len(scale_row) >= len(scale_names) - star if star or unpack is None else len(scale_row) == len(unpack)
        if not fits:
            who = f"ultralytics {known.version}'s parse_model" if unpack else "parse_model"
            stop(f"{name}: the '{scale}' row of 'scales' has {len(scale_row)} values {list(scale_row)} but "
                 f"{who} unpacks {len(scale_names) - star}{' or more' if star else ''} "
                 f"({', '.join(scale_names)} = scales[scale]): the build fails with ValueError; fix: write the row as "
                 f"{row_shape}", rule="scales")
        values = scale_values(scale_row, scale_names)
        bad = [k for k in SCALE_NAMES if not _is_num(values.get(k))]
        if bad:
            stop(f"{name}: the '{scale}' row of 'scales' {list(scale_row)}: {', '.join(bad)} must be a number "
                 f"(read as {row_shape})", rule="scales")
        depth = values["depth"]
    else:
        depth = data.get("depth_multiple", 1.0)

    # --- unknown modules: parse_model's globals()[m] raises KeyError on the first one
    if known is not None:
        unknown: dict[str, list[int]] = {}
        for r in rows:
            if known.unknown(r.module):
                unknown.setdefault(r.module, []).append(r.index)
        if unknown:
            listed = ", ".join(
                f"{m} (layer{'s' * (len(ix) > 1)} {', '.join(map(str, ix))})" for m, ix in unknown.items()
            )
            stop(f"unknown modules (not in ultralytics {known.version} or the patch): {listed}",
                 layer=min(min(ix) for ix in unknown.values()), rule="unknown-module")

    # --- rows parse_model cannot read, and 'from' indices that do not point back
    resolved: list[Row] = []
    sources: list[list[int]] = []  # absolute inputs of every layer ([] for the image)
    for r in rows:
        i, tag = r.index, f"layer {r.index} {r.module}"
        f = r.from_
        if not (isinstance(f, int) and not isinstance(f, bool)) and not (
            isinstance(f, list) and f and all(isinstance(x, int) and not isinstance(x, bool) for x in f)
        ):
            stop(f"{tag}: 'from' must be a layer index or a list of them, got {f!r}", i)
        if not isinstance(r.repeats, int) or isinstance(r.repeats, bool):
            stop(f"{tag}: repeats must be an integer, got {r.repeats!r}", i)
        if not isinstance(r.args, list):
            stop(f"{tag}: args must be a list, got {r.args!r}", i)
        src = []
        for x in _froms(f):
            if i == 0 and x == -1:
                continue  # the image
            a = x if x >= 0 else i + x
            if a >= i:
                what = "itself" if a == i else f"layer {a}, which comes later"
                stop(f"{tag}{' ' + _format_from(f) if isinstance(f, list) else ''}: 'from' {x} points forward to "
                     f"{what} (a layer reads only earlier layers)", i, "from")
            if a < 0:
                stop(f"{tag}: 'from' {x} points before layer 0 (out of range)", i, "from")
            src.append(a)
        sources.append(src)
        args = [_resolve(a, data) for a in r.args]
        if r.module in SCALED_MODULES and r.module != "Classify" and not (args and _is_num(args[0])):
            stop(f"{tag}: its first argument, the output channels, must be a number; got {r.args[:1]}", i, "args")
        if r.module == "Concat" and not isinstance(f, list):
            stop(f"{tag}: Concat takes a list of inputs ([-1, 6]), got {f}", i, "from")
        if r.module in MULTI_HEADS and not isinstance(f, list):
            stop(f"{tag}: an output head takes a list of inputs, got {f}", i, "from")
        if r.module in ATTENTION_ROWS:
            if isinstance(f, list):
                stop(f"{tag}: MHSA takes one input, got {_format_from(f)}", i, "from")
            if _as_tutorial(rule_of(r.module)[0]) and len(args) > 4:
                stop(f"{tag}: MHSA takes at most 4 arguments [width, height, heads, pos_emb], got {len(args)} "
                     f"({r.args}): the build fails with a TypeError", i, "args")
        for a in src:
            if rows[a].module in HEAD_MODULES:
                stop(f"{tag}: reads layer {a} ({rows[a].module}), an output head, not a feature map", i, "from")
        resolved.append(replace(r, args=args))

    try:
        chans, _ = replay(resolved, data, scale, readings={m: rule_of(m)[0] for m in layer_names_all if rule_of(m)[0]},
                          scale_names=scale_names)
    except PatchError as e:  # pragma: no cover - the checks above catch what replay refuses
        stop(f"{name}: {e}")

    strides = _strides(resolved, sources)

    # --- maps that cannot be concatenated
    for r in resolved:
        if r.module != "Concat":
            continue
        ins = [(a, strides[a]) for a in sources[r.index]]
        if len({s for _, s in ins if s is not None}) > 1:
            distinct = sorted({s for _, s in ins if s is not None})
            detail = ", ".join(f"layer {a} {rows[a].module}: {stage_label(s)}" for a, s in ins if s is not None)
            stop(f"layer {r.index} Concat {_format_from(r.from_)}: "
                 f"{' and '.join(f'stride {s}' for s in distinct)} inputs ({detail}): torch.cat needs maps of one "
                 f"size", r.index, "concat")

    # --- the patch's layers' rows: the call parse_model makes under the target's reading (patches/readings.py)
    calls, layer_calls = [], []
    for r in resolved:
        if r.module not in layer_names_all:
            continue
        i, args = r.index, list(r.args)
        rd, how = rule_of(r.module)
        c1 = chans[sources[i][0]] if sources[i] else None
        stride = strides[sources[i][0]] if sources[i] else 1
        size = max(1, imgsz // stride) if stride else None
        n = max(round(r.repeats * depth), 1) if r.repeats > 1 and _is_num(depth) else r.repeats
        if rd is None:
            layer_calls.append(LayerCall(i, r.module, None, n, how, stride, size))
            continue
        values, blocks = rd.call(c1, chans[i], n, args)
        names, defaults = params_of(r.module)
        if len(values) > len(names) and not (r.module in user and not names):
            stop(f"layer {i} {r.module} {rows[i].args}: read as {how}, parse_model calls {r.module} with "
                 f"{len(values)} arguments and it takes at most {len(names)} ({', '.join(names)}): the build fails "
                 f"with a TypeError", i, "args")
        mapped = {**defaults, **dict(zip(names, values))}
        mapped = {k: mapped[k] for k in names if k in mapped}
        flow = (c1, chans[i]) if r.module in user else None
        layer_calls.append(LayerCall(i, r.module, tuple(mapped.items()), blocks, how, stride, size, flow))
        if r.module not in ATTENTION_ROWS:
            continue
        width, height, heads, pos = (mapped.get(k, d) for k, d in MHSA_DEFAULTS.items())
        n_dims = mapped.get("n_dims")
        call = MhsaCall(i, n_dims, width, height, heads, pos, stride, size)
        calls.append(call)
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
            stop(f"layer {i} MHSA {rows[i].args}: heads={heads!r} must be a positive integer (the build fails with "
                 f"ValueError)", i, "mhsa-heads")
        if n_dims is not None and n_dims % heads:
            divisors = [h for h in range(1, min(n_dims, 64) + 1) if n_dims % h == 0]
            stop(f"layer {i} MHSA {rows[i].args}: n_dims={n_dims} is not divisible by heads={heads} "
                 f"(the build fails with ValueError); choose heads among {', '.join(map(str, divisors))}",
                 i, "mhsa-heads")
        if pos and not (_is_num(width) and _is_num(height) and width >= 1 and height >= 1):
            stop(f"layer {i} MHSA {rows[i].args}: pos_emb needs width >= 1 and height >= 1, got "
                 f"width={width!r}, height={height!r} (the build fails with ValueError)", i, "mhsa-args")
        if (
            not pos
            and len(args) >= 3
            and all(_is_num(v) and not isinstance(v, bool) and v >= FOREIGN_LIKE for v in (width, height))
        ):
            warn("foreign-row", f"layer {i} MHSA {rows[i].args}: read as {how}, width={width!r} and height={height!r} "
                                f"look like channel counts, as another class named MHSA takes them (a row written "
                                f"for a class that 'apply --replace-foreign' replaced?); without pos_emb they set "
                                f"nothing: MHSA takes its channels from its input"
                                f"{f' ({n_dims} here)' if n_dims is not None else ''}", i)
        if _as_tutorial(rd) and not pos and len(args) in (1, 2) and not (len(args) == 2 and args[0] == args[1]):
            nums = [a for a in args if _is_num(a)]
            trailing = nums[-1] if nums else None
            heads_like = trailing is not None and 1 <= trailing <= MAX_HEADS_LIKE
            meant = int(trailing) if heads_like else 4
            set_ = " and ".join(f"{k}={v!r}" for k, v in zip(("width", "height"), args))
            verb = "do" if len(args) == 2 else "does"
            stays = "heads is 4 only by default" if meant == 4 and heads_like else "heads stays 4"
            chan = f" ({n_dims} here)" if n_dims is not None else ""
            fix = f"- [-1, 1, {r.module}, [14, 14, {meant}]]"
            if n_dims is not None and n_dims % meant:
                fix += f" (but {meant} does not divide {n_dims}: pick heads that do)"
            intent = f"if you meant {meant} heads, write" if heads_like else "write"
            warn("mhsa-args", f"layer {i} MHSA {rows[i].args}: {set_} {verb} nothing without pos_emb and {stays}: "
                              f"MHSA takes its channels from its input{chan} and its heads as the third argument; "
                              f"{intent} {fix}", i)
        if pos and size is not None and (width, height) != (size, size):
            fix = _row_text(rows[i], lines, args=[size, size, heads, True])
            warn("pos-grid", f"layer {i} MHSA: pos_emb tables are {width}×{height} but the feature map is "
                             f"{size}×{size} at --imgsz {imgsz}: they are resized on every forward pass (it works, "
                             f"at the cost of a resize); fix for {imgsz}: {fix}", i)
    out["mhsa"] = tuple(calls)
    out["calls"] = tuple(layer_calls)
    from mhsa_patch.patches import layer_names

    out["added"] = tuple(r.module for r in rows if r.module in layer_names() or r.module in user)

    last = len(rows) - 1
    readers: dict[int, list[int]] = {}
    for i, src in enumerate(sources):
        for a in src:
            readers.setdefault(a, []).append(i)

    # --- output heads reading a layer that a block of the same stride continues
    for r in resolved:
        if r.module not in MULTI_HEADS:
            continue
        h, ins, fixed, flagged = r.index, sources[r.index], [], []
        for k in ins:
            j = k
            while (
                j + 1 < h
                and sources[j + 1] == [j]
                and rows[j + 1].module in SCALED_MODULES
                and strides[j + 1] == strides[j]
                and strides[j] is not None
            ):
                j += 1
            fixed.append(j)
            if j != k:
                flagged.append(f"{k} ({rows[k].module}) is followed by {j} ({rows[j].module})")
        if flagged:
            new_from = [j if x >= 0 else j - h for x, j in zip(_froms(r.from_), fixed)]
            warn("head-input", f"layer {h} {r.module} {_format_from(r.from_)} reads layers that are not the last of "
                               f"their stage: {'; '.join(flagged)} at the same stride: the head gets the features "
                               f"before the stage's last block (a row inserted without renumbering?); fix: "
                               f"{_row_text(rows[h], lines, new_from=new_from)}", h)

    # --- layers whose output nothing reads (the last layer is the model's output)
    live = {last}
    for i in range(last, -1, -1):
        if i in live:
            live.update(sources[i])
    dead = [i for i in range(last) if i not in live]
    for i in dead:
        if readers.get(i) or rows[i].module in SIDE_EFFECT_MODULES:
            continue  # it feeds only dead layers: reported with the layer it feeds
        feeders = [k for k in dead if k != i and _only_feeds(k, i, readers, dead)]
        counts = [_params(resolved[k], chans[sources[k][0]] if sources[k] else 3, chans[k], depth) for k in [*feeders, i]]
        cost = f": about {sum(counts):,} parameters that never train" if None not in counts and sum(counts) else ""
        also = f" (nor the layers that feed only it: {', '.join(map(str, feeders))})" if feeders else ""
        head = rows[last].module
        warn("dead-layer", f"layer {i} {rows[i].module}: nothing reads its output, neither a later layer nor the "
                           f"{head} head{also}{cost}; fix: point a later layer's 'from' at {i} (renumber the rows "
                           f"after an insertion) or delete the row", i)

    # --- index comments that disagree with the row's position
    if lines is not None:
        stale = []
        for r in rows:
            line = lines[r.line]
            m = ROW_RE.match(line)
            end = _bracket_end(line, m.end()) if m else -1
            comment = line[end:].strip() if end > 0 else ""
            cm = INDEX_COMMENT_RE.match(comment)
            if cm and int(cm.group(1)) != r.index and int(cm.group(1)) <= len(rows) + 10:
                stale.append((r.index, int(cm.group(1))))
        if stale:
            listed = ", ".join(f"layer {i} says # {n}" for i, n in stale)
            warn("index-comment", f"index comments disagree with the row positions: {listed} (a row was inserted or "
                                  f"removed: check the 'from' indices after it too); fix: renumber them "
                                  f"({', '.join(f'# {i}' for i, _ in stale)})", stale[0][0])

    return LintResult(findings=tuple(findings), **out)


def _strides(rows: list[Row], sources: list[list[int]]) -> list:
    """The stride of every layer's output (None where not followed): downsampling convs and pools multiply it,
    ``nn.Upsample`` and transposed convs divide it, other layers keep their first input's."""
    out: list = []

    def num(args, k, default):
        v = args[k] if len(args) > k and args[k] is not None else default
        return int(v) if _is_num(v) and v >= 1 else None

    for r, src in zip(rows, sources):
        s = out[src[0]] if src else 1
        m, a = r.module, r.args
        if m in HEAD_MODULES or m in OPAQUE_MODULES:
            s = None
        elif s is None:
            pass
        elif m in DOWNSAMPLERS:
            pos = DOWNSAMPLERS[m]
            f = 2 if pos is None else num(a, pos, 1)
            s = None if f is None else s * f
        elif m in UPSAMPLERS:
            f = num(a, *UPSAMPLERS[m])
            s = None if f is None else max(1, s // f)
        elif m == "nn.Upsample":
            f = num(a, 1, 2)
            s = None if f is None else max(1, s // f)
        elif m in POOLS:
            f = num(a, 1, a[0] if a else None)
            s = None if f is None else s * f
        out.append(s)
    return out


def _only_feeds(k: int, i: int, readers: dict, dead: list[int]) -> bool:
    """Whether dead layer ``k`` reaches dead sink ``i`` and feeds nothing that is alive."""
    seen, todo = set(), [k]
    while todo:
        x = todo.pop()
        if x == i:
            return True
        if x in seen:
            continue
        seen.add(x)
        todo.extend(readers.get(x, []))
    return False


def lint_file(path: str | Path, target, *, imgsz: int = 640) -> LintResult:
    """Lint the model YAML at ``path`` against ``target`` (its known modules; the sibling its release may load)."""
    from mhsa_patch.modelyaml.naming import _release_tries_unified_first

    path = Path(path).expanduser()
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:  # gen-yaml --from's wording
        raise PatchError(f"{path.name}: not UTF-8 text (byte {e.start}), not a model YAML") from None
    except OSError as e:
        raise PatchError(f"cannot read {path}: {e.strerror or e}") from None
    result = lint_text(text, path.name, imgsz=imgsz, known=known_modules(target))
    sibling = Path(unified_path(path))
    if sibling != path and sibling.is_file() and _release_tries_unified_first(target):
        extra = Finding("warning", "sibling", f"{sibling.name} exists next to {path.name}: ultralytics "
                        f"{target.version} loads it instead (it tries the scale-less name first); fix: delete or "
                        f"rename {sibling.name}")
        result = replace(result, findings=(extra, *result.findings))
    return result
