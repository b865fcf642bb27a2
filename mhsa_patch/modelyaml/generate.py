"""Ready-to-train MHSA model YAMLs, derived from the target release's own model configs.

Pure logic: reads the base config as text (and with PyYAML for checks), never imports torch or ultralytics, never
prints. Every refusal is a :class:`~mhsa_patch.errors.PatchError` whose message is one line.

The rules, in short:

* **Base file.** ``<base><task suffix>.yaml`` from the target's own package: ``cfg/models/v8/`` (``models/v8/`` in
  8.0.9x), ``cfg/models/11/`` (8.3.0+), ``cfg/models/26/`` (8.4.0+).
* **Insertion point** (``--at``). ``P3``/``P4``/``P5``: after the *last backbone layer at that stride*, i.e. the
  stage's output, the feature the head reads (yolov8: 4, 6, 9 = SPPF; yolo11/yolo26: 4, 6, 10 = C2PSA). A module
  name (``SPPF``, ``C2PSA``): after the backbone layer of that module (it must be unique). An integer ``i``: after
  layer ``i``. The default is ``P5``.
* **Wiring.** MHSA becomes layer ``i + 1``; every later layer moves by one and every ``from`` is remapped, absolute
  or relative, so that it reads the same feature as before. The layer right after the insertion reads MHSA through
  its ``-1``. Every other reader of layer ``i`` (the P5 concat ``[-1, 9]`` of yolov8, Detect after a head layer)
  reads MHSA too (``lateral="attention"``, the tutorial's wiring) or keeps reading layer ``i``
  (``lateral="pre-attention"``).
* **Channels C.** Replayed from ``parse_model``'s arithmetic over the file's rows: scaled modules (Conv, C2f, SPPF,
  C3k2, C2PSA, ...) give ``make_divisible(min(c2, max_channels) * width, 8)``, ``Concat`` sums its inputs, other
  modules keep their input's channels. The release tests check the result against the built model's parameters.
* **Scale.** Ultralytics takes the scale from the file *name* only. The generated file keeps only the requested
  row of ``scales``, so a renamed copy without a scale in its name (``my.yaml``) still builds that scale.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mhsa_patch import __version__
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.target import Target, version_tuple

SCALES = ("n", "s", "m", "l", "x")
BASES = ("yolov8", "yolo11", "yolo26")
TASKS = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}
LATERALS = ("attention", "pre-attention")

# Where each base lives inside the package, newest layout first, and the release that first shipped it.
BASE_DIRS = {"yolov8": ("cfg/models/v8", "models/v8"), "yolo11": ("cfg/models/11",), "yolo26": ("cfg/models/26",)}
BASE_SINCE = {"yolov8": "8.0.0", "yolo11": "8.3.0", "yolo26": "8.4.0"}

# parse_model's ``base_modules`` (union over 8.0.98 - 8.4.190): output channels are args[0], scaled by width.
SCALED_MODULES = frozenset(
    {
        "Classify", "Conv", "ConvTranspose", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "C2fPSA",
        "C2PSA", "DWConv", "Focus", "BottleneckCSP", "C1", "C2", "C2f", "C3k2", "RepNCSPELAN4", "ELAN1", "ADown",
        "AConv", "SPPELAN", "C2fAttn", "C3", "C3TR", "C3Ghost", "nn.ConvTranspose2d", "DWConvTranspose2d", "C3x",
        "RepC3", "PSA", "SCDown", "C2fCIB", "A2C2f",
    }
)  # fmt: skip
# Output heads: their output is not a feature map, nothing can follow them.
HEAD_MODULES = frozenset(
    {
        "Detect", "Segment", "Pose", "OBB", "Classify", "RTDETRDecoder", "WorldDetect", "YOLOEDetect", "YOLOESegment",
        "v10Detect", "Segment26", "Pose26", "OBB26", "YOLOESegment26", "Depth", "SemanticSegment",
    }
)  # fmt: skip
# Modules whose output channels parse_model computes in ways this replay does not follow.
OPAQUE_MODULES = frozenset({"HGStem", "HGBlock", "ResNetLayer", "CBLinear", "CBFuse", "TorchVision", "Index", "AIFI"})
# Modules that change the stride: stride argument position (None: always 2).
DOWNSAMPLERS = {"Conv": 2, "GhostConv": 2, "DWConv": 2, "SCDown": 2, "Focus": None, "ADown": None, "AConv": None}

# ultralytics' own regexes (tasks.py): the scale guess and the "unified" scale-less path tried first up to 8.4.x.
SCALE_RES = (re.compile(r"yolo(e-)?[v]?\d+([nslmx])"), re.compile(r"yolov\d+([nslmx])"))
UNIFY_RE = re.compile(r"(\d+)([nslmx])(.+)?$")
MODEL_NAME_RE = re.compile(r"yolo(e-)?v?\d+")

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same results, faster


def load_yaml(text: str):
    """``yaml.safe_load`` (with libyaml's loader when available)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader


@dataclass(frozen=True)
class Request:
    """What ``gen-yaml`` was asked for. ``at=None`` means ``P5``; ``imgsz`` matters only with ``pos_emb``."""

    scale: str
    base: str = "yolov8"
    task: str = "detect"
    heads: int = 4
    pos_emb: bool = False
    imgsz: int = 640
    at: str | None = None
    lateral: str = "attention"


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


@dataclass(frozen=True)
class Result:
    """A generated MHSA config. ``text`` is the file; ``data`` the same, as ``yaml.safe_load`` reads it."""

    file_name: str
    text: str
    data: dict
    base_file: Path
    base_rel: str  # base file relative to the package, e.g. "cfg/models/v8/yolov8.yaml"
    stock_name: str  # the stock model of the same scale, e.g. "yolov8n-seg.yaml"
    channels: int  # C: the channels MHSA gets (and gives)
    after: int  # the base layer MHSA follows
    index: int  # MHSA's index in the new file (after + 1)
    stride: int  # the stride of the feature MHSA works on
    grid: int  # feature size at --imgsz (the positional tables' size with pos_emb)
    mhsa_args: list  # the YAML args of the MHSA row
    index_map: dict = field(default_factory=dict)  # base layer index -> new index
    readers: tuple = ()  # new indices of the layers that read the MHSA output
    warnings: tuple = ()
    command: str = ""


# ---------------------------------------------------------------------------------------------------------------------
# small helpers


def make_divisible(x: float, divisor: int = 8) -> int:
    """ultralytics.utils.ops.make_divisible for an int divisor."""
    return int(math.ceil(x / divisor) * divisor)


def guess_scale(name: str) -> str:
    """The scale ultralytics reads from a file name ('' when none), by the newest and the oldest regex."""
    stem = Path(name).stem
    for pattern in SCALE_RES:
        m = pattern.search(stem)
        if m:
            return m.group(m.lastindex)
    return ""


def unified_path(path: str | Path) -> str:
    """The scale-less path ultralytics derives (``.../yolov8n-MHSA.yaml`` -> ``.../yolov8-MHSA.yaml``)."""
    return UNIFY_RE.sub(r"\1\3", str(path))


def output_name(req: Request) -> str:
    """``yolov8n-MHSA.yaml``, ``yolo11s-seg-MHSA.yaml``: the scale right after the model number (ultralytics' rule)."""
    return f"{req.base}{req.scale}{TASKS[req.task]}-MHSA.yaml"


def stock_name(req: Request) -> str:
    return f"{req.base}{req.scale}{TASKS[req.task]}.yaml"


def command_line(req: Request) -> str:
    """The canonical command that produces this file's content (options that change nothing are left out)."""
    parts = ["mhsa-patch gen-yaml", f"--scale {req.scale}"]
    if req.base != "yolov8":
        parts.append(f"--base {req.base}")
    if req.task != "detect":
        parts.append(f"--task {req.task}")
    if req.at is not None and str(req.at) != "P5":
        parts.append(f"--at {req.at}")
    if req.heads != 4:
        parts.append(f"--heads {req.heads}")
    if req.pos_emb:
        parts.append("--pos-emb")
        if req.imgsz != 640:
            parts.append(f"--imgsz {req.imgsz}")
    if req.lateral != "attention":
        parts.append(f"--lateral {req.lateral}")
    return " ".join(parts)


def validate_request(req: Request) -> Request:
    """Normalise the spelling and refuse unknown choices; returns the normalised request."""
    scale = str(req.scale).strip().lower()
    base = str(req.base).strip().lower()
    task = str(req.task).strip().lower()
    lateral = str(req.lateral).strip().lower()
    if scale not in SCALES:
        raise PatchError(f"unknown scale '{req.scale}': choose one of {', '.join(SCALES)}")
    if base not in BASES:
        raise PatchError(f"unknown base '{req.base}': choose one of {', '.join(BASES)}")
    if task not in TASKS:
        raise PatchError(f"unknown task '{req.task}': choose one of {', '.join(TASKS)}")
    if lateral not in LATERALS:
        raise PatchError(f"unknown lateral '{req.lateral}': choose one of {', '.join(LATERALS)}")
    if not isinstance(req.heads, int) or isinstance(req.heads, bool) or req.heads <= 0:
        raise PatchError(f"--heads must be a positive integer, got {req.heads}")
    if not isinstance(req.imgsz, int) or isinstance(req.imgsz, bool) or req.imgsz <= 0:
        raise PatchError(f"--imgsz must be a positive integer, got {req.imgsz}")
    at = None if req.at is None or str(req.at).strip() == "" else str(req.at).strip()
    if at is not None and re.fullmatch(r"[pP]\d+", at):
        at = at.upper()
    return Request(scale, base, task, req.heads, bool(req.pos_emb), req.imgsz, at, lateral)


# ---------------------------------------------------------------------------------------------------------------------
# the base file


def base_config(target: Target, base: str, task: str) -> Path:
    """The target's own ``<base><suffix>.yaml``, or a one-line refusal naming what this release lacks."""
    name = f"{base}{TASKS[task]}.yaml"
    dirs = BASE_DIRS[base]
    for rel in dirs:
        path = target.package / rel / name
        if path.is_file():
            return path
    if not any((target.package / rel / f"{base}.yaml").is_file() for rel in dirs):
        raise PatchError(
            f"ultralytics {target.version} ships no {base} configs ({dirs[0]}/{base}.yaml not found; "
            f"{base} arrived in {BASE_SINCE[base]}): upgrade ultralytics or choose another --base"
        )
    raise PatchError(
        f"ultralytics {target.version} ships no {name} (--task {task} with --base {base}): "
        f"choose another --task or --base, or upgrade ultralytics"
    )


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
KEY_RE = re.compile(r"^(?P<key>[A-Za-z_][\w-]*)\s*:(?P<rest>.*)$")
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


def replay(rows: list[Row], data: dict, scale: str, imgsz_stride: bool = True) -> tuple[list, list]:
    """Output channels and stride of every layer, as ``parse_model`` builds them (None where not a feature map)."""
    depth_width = (data.get("scales") or {}).get(scale)
    if depth_width is not None:
        _, width, max_channels = depth_width
    else:
        width, max_channels = data.get("width_multiple", 1.0), float("inf")
    nc = data.get("nc")
    ch_in, stride_in = 3, 1
    chans: list = []
    strides: list = []

    def get(lst, k, i):
        j = k if k >= 0 else i + k
        if i == 0 and k == -1:
            return None
        if j < 0 or j >= i:
            raise PatchError(f"layer {i} reads layer {k}, which does not precede it")
        return lst[j]

    for row in rows:
        i, f, m, args = row.index, row.from_, row.module, row.args
        if i == 0:
            c_src, s_src = [ch_in], [stride_in]
        else:
            c_src = [get(chans, k, i) for k in _froms(f)]
            s_src = [get(strides, k, i) for k in _froms(f)]
        if m in HEAD_MODULES and m != "Classify":
            c2, s2 = None, None
        elif m in SCALED_MODULES:
            c2 = args[0]
            if m == "Classify" or c2 == nc:
                c2, s2 = None, None
            else:
                c2 = make_divisible(min(c2, max_channels) * width, 8)
                s2 = s_src[0]
                if m in DOWNSAMPLERS and s2 is not None:
                    pos = DOWNSAMPLERS[m]
                    s2 = s2 * (2 if pos is None else (int(args[pos]) if len(args) > pos else 1))
        elif m == "Concat":
            c2 = None if None in c_src else sum(c_src)
            s2 = s_src[0]
        elif m in OPAQUE_MODULES:
            c2, s2 = None, None
        else:  # parse_model's final ``else: c2 = ch[f]``
            c2, s2 = c_src[0], s_src[0]
            if m == "nn.Upsample" and s2 is not None:
                factor = args[1] if len(args) > 1 else 2
                s2 = max(1, int(s2 // factor))
        chans.append(c2)
        strides.append(s2)
    return chans, strides


def stage_label(stride: int) -> str:
    p = int(round(math.log2(stride))) if stride and stride > 0 else 0
    return f"P{p}/{stride}" if stride and 2**p == stride else f"/{stride}"


def resolve_at(at: str | None, rows: list[Row], chans: list, strides: list, n_backbone: int, where: str) -> int:
    """The base layer index MHSA goes after (see the module docstring for the rules)."""
    at = "P5" if at is None else at
    last = len(rows) - 1
    if re.fullmatch(r"P\d+", at):
        want = 2 ** int(at[1:])
        stage = [r.index for r in rows[:n_backbone] if strides[r.index] == want and chans[r.index] is not None]
        if not stage:
            have = sorted({s for s in strides[:n_backbone] if s})
            raise PatchError(
                f"--at {at}: no backbone layer at stride {want} in {where} "
                f"(stages: {', '.join(f'P{int(math.log2(s))}' for s in have)})"
            )
        i = stage[-1]
    elif re.fullmatch(r"-?\d+", at):
        i = int(at)
        if i < 0 or i >= last:
            raise PatchError(f"--at {i}: choose a layer index from 0 to {last - 1} (layer {last} is the output head)")
    else:
        hits = [r.index for r in rows[:n_backbone] if r.module.lower() == at.lower()]
        if not hits:
            names = ", ".join(dict.fromkeys(r.module for r in rows[:n_backbone]))
            raise PatchError(f"--at {at}: not a stage (P3, P4, P5), a layer index, or a backbone module ({names})")
        if len(hits) > 1:
            raise PatchError(
                f"--at {at}: {len(hits)} backbone layers are {rows[hits[0]].module} "
                f"({', '.join(map(str, hits))}): pass the index"
            )
        i = hits[0]
    if chans[i] is None or strides[i] is None:
        raise PatchError(f"--at {at}: layer {i} ({rows[i].module}) does not give a feature map MHSA can follow")
    return i


def remap(rows: list[Row], after: int, lateral: str) -> tuple[list, dict, list]:
    """New ``from`` of every base row, the index map, and the new indices of the layers that read MHSA."""
    mhsa = after + 1
    index_map = {r.index: r.index + (1 if r.index > after else 0) for r in rows}
    new_froms: list = []
    readers: list[int] = []
    for row in rows:
        o, n_o = row.index, index_map[row.index]
        out = []
        for x in _froms(row.from_):
            a = x if x >= 0 else o + x
            if a < after:
                b = a
            elif a > after:
                b = a + 1
            elif lateral == "attention" or (o == after + 1 and x == -1):
                b = mhsa  # the serial successor always reads MHSA; laterals too with "attention"
            else:
                b = after
            if b == mhsa:
                readers.append(n_o)
            out.append(b - n_o if x < 0 else b)
        new_froms.append(out[0] if isinstance(row.from_, int) else out)
    return new_froms, index_map, sorted(set(readers))


def _format_from(f) -> str:
    return str(f) if isinstance(f, int) else "[" + ", ".join(str(x) for x in f) + "]"


NUM_COMMENT_RE = re.compile(r"^(#\s*)(\d+)(?!\d)")


def _header_insert_at(lines: list[str], first_key: int) -> int:
    """Where the 'Generated by' line goes: after the description comments, before the comments above the first key."""
    k = first_key - 1
    while k >= 0 and lines[k].lstrip().startswith("#"):  # the comment paragraph right above the key (# Parameters)
        k -= 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    return k + 1 if k >= 0 and lines[k].lstrip().startswith("#") else 0


# ---------------------------------------------------------------------------------------------------------------------
# generation


def generate(target: Target, req: Request) -> Result:
    """Build the MHSA config for ``req`` from the target's own base config. Raises PatchError on any bad input."""
    req = validate_request(req)
    path = base_config(target, req.base, req.task)
    rel = path.relative_to(target.package).as_posix()
    where = rel
    try:
        text = path.read_bytes().decode("utf-8")  # bytes: keep CRLF if the file has it
    except (OSError, UnicodeDecodeError) as e:
        raise PatchError(f"cannot read {path}: {e}") from None
    p = parse_base(text, where)
    data, rows = p.data, p.rows
    scales = data.get("scales")
    if not isinstance(scales, dict) or "scales" not in p.keys:
        raise PatchError(f"{where}: no 'scales' block, cannot make a scale-{req.scale} file")
    if req.scale not in scales:
        raise PatchError(f"unknown scale '{req.scale}' for {where}: it has {', '.join(map(str, scales))}")
    if any(r.module == "MHSA" for r in rows):
        raise PatchError(f"{where} already has an MHSA layer")
    n_backbone = len(data["backbone"])
    chans, strides = replay(rows, data, req.scale)
    after = resolve_at(req.at, rows, chans, strides, n_backbone, where)
    c, stride = chans[after], strides[after]
    if c % req.heads:
        divisors = [h for h in range(1, min(c, 64) + 1) if c % h == 0]
        raise PatchError(
            f"--heads {req.heads} does not divide the {c} channels MHSA gets at scale {req.scale} "
            f"(after layer {after}, {rows[after].module}): choose one of {', '.join(map(str, divisors))}"
        )
    warnings: list[str] = []
    head_strides = [
        strides[k if k >= 0 else len(rows) - 1 + k] for k in _froms(rows[-1].from_) if rows[-1].module in HEAD_MODULES
    ]
    max_stride = max([s for s in head_strides if s] + [32])
    imgsz = make_divisible(req.imgsz, max_stride) if req.imgsz >= max_stride else max_stride
    if req.pos_emb and imgsz != req.imgsz:
        warnings.append(
            f"--imgsz {req.imgsz} is not a multiple of the max stride {max_stride}: ultralytics uses {imgsz}"
        )
    grid = max(1, imgsz // stride)
    mhsa_args = [grid, grid, req.heads, True] if req.pos_emb else [14, 14, req.heads]

    new_froms, index_map, readers = remap(rows, after, req.lateral)
    mhsa_index = after + 1
    if not readers:
        raise PatchError(
            f"--at {req.at or 'P5'} with --lateral {req.lateral}: "
            f"no layer would read the MHSA output (layer {mhsa_index})"
        )
    if req.lateral == "pre-attention":
        lateral_readers = [
            r.index for r in rows if r.index > after + 1 and after in [x if x >= 0 else r.index + x for x in _froms(r.from_)]
        ]
        if not lateral_readers:
            warnings.append(f"--lateral pre-attention changes nothing here: only layer {after + 1} reads layer {after}")

    # --- the text
    lines = list(p.lines)
    out: list[str] = []
    row_at_line = {r.line: r for r in rows}
    scales_line = p.keys["scales"]
    scale_rows = {}
    section_end = {}
    for key, no in p.keys.items():
        later = [n for n in p.keys.values() if n > no]
        section_end[key] = min(later) if later else len(lines)
    for no in range(scales_line + 1, section_end["scales"]):
        m = re.match(r"^\s+([A-Za-z0-9_]+)\s*:", lines[no])
        if m:
            scale_rows[no] = m.group(1)
    if sorted(scale_rows.values()) != sorted(map(str, scales)):
        raise PatchError(f"{where}: unexpected layout of the 'scales' block")
    first_key = min(p.keys.values())
    gen_at = _header_insert_at(lines, first_key)
    ultra = f"ultralytics {target.version} {rel}"
    generated = f"# Generated by mhsa-patch {__version__} from {ultra}: {command_line(req)}"
    stage = stage_label(stride)
    pos_note = f", {grid}x{grid} positions" if req.pos_emb else ""
    for no, line in enumerate(lines):
        if no == gen_at:
            out.append(generated)
        if no in scale_rows:
            if scale_rows[no] != req.scale:
                continue
            body = line.split("#", 1)[0].rstrip()
            note = f"the only row: builds scale {req.scale} under any name that carries no other scale"
            out.append(f"{body}{p.comment_sep}# {note}")
            continue
        row = row_at_line.get(no)
        if row is None:
            out.append(line)
            continue
        new_index = index_map[row.index]
        rm = ROW_RE.match(line)
        start = rm.end()
        end = _bracket_end(line, start)
        flow, rest = line[start:end], line[end:]
        fm = FROM_RE.match(flow)
        if not fm:
            raise PatchError(f"{where}:{no + 1}: cannot read the 'from' field of layer {row.index}")
        new_from = new_froms[row.index]
        if new_from != row.from_:
            flow = flow[: fm.start("from")] + _format_from(new_from) + flow[fm.end("from") :]
        if rest.strip():
            sep = rest[: len(rest) - len(rest.lstrip())]
            comment = rest.lstrip()
            cm = NUM_COMMENT_RE.match(comment)
            if cm and int(cm.group(2)) == row.index and new_index != row.index:
                comment = cm.group(1) + str(new_index) + comment[cm.end() :]
            rest = sep + comment
        out.append(line[:start] + flow + rest)
        if row.index == after:
            args = ", ".join("True" if a is True else str(a) for a in mhsa_args)
            out.append(
                f"{rm.group('indent')}- [-1, 1, MHSA, [{args}]]{p.comment_sep}"
                f"# {mhsa_index} ({stage}: {c} channels, {req.heads} heads{pos_note})"
            )
    if gen_at >= len(lines):
        out.append(generated)
    new_text = p.newline.join(out) + (p.newline if p.final_newline else "")

    # --- check: the text must read back as the intended structure
    expected = _expected(data, req, rows, new_froms, after, mhsa_args)
    try:
        got = load_yaml(new_text)
    except yaml.YAMLError as e:  # pragma: no cover - an emitter bug
        raise PatchError(f"internal error: the generated YAML does not parse ({e})") from None
    if got != expected:  # pragma: no cover - an emitter bug
        raise PatchError(f"internal error: the generated YAML for {where} does not read back as intended")

    return Result(
        file_name=output_name(req),
        text=new_text,
        data=got,
        base_file=path,
        base_rel=rel,
        stock_name=stock_name(req),
        channels=c,
        after=after,
        index=mhsa_index,
        stride=stride,
        grid=grid,
        mhsa_args=mhsa_args,
        index_map=index_map,
        readers=tuple(readers),
        warnings=tuple(warnings),
        command=command_line(req),
    )


def _expected(data: dict, req: Request, rows: list[Row], new_froms: list, after: int, mhsa_args: list) -> dict:
    """The intended result as a data structure, built independently of the text emitter."""
    d = dict(data)
    d["scales"] = {req.scale: data["scales"][req.scale]}
    layers = [[nf, r.repeats, r.module, r.args] for r, nf in zip(rows, new_froms)]
    layers.insert(after + 1, [-1, 1, "MHSA", list(mhsa_args)])
    n_backbone = len(data["backbone"]) + (1 if after < len(data["backbone"]) else 0)
    d["backbone"], d["head"] = layers[:n_backbone], layers[n_backbone:]
    return d


# ---------------------------------------------------------------------------------------------------------------------
# where the file goes


def check_output(path: Path, req: Request, target: Target, force: bool = False) -> list[str]:
    """Refuse output names that would not build the requested scale; return warnings for risky surroundings.

    Refused: an existing file (without ``force``), a directory, a missing parent folder, a suffix other than
    .yaml/.yml, a name whose scale differs from ``req.scale``, a scale-less name of a model family
    (``yolov8-MHSA.yaml``) that ultralytics would load in place of the scaled files, a name that resolves to the
    release's own config (``yolov8n.yaml``) in releases that try the scale-less name first.
    """
    req = validate_request(req)
    warnings: list[str] = []
    name = path.name
    if path.is_dir():
        raise PatchError(f"{path} is a directory")
    if not path.parent.is_dir():
        raise PatchError(f"{path.parent}: no such directory")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise PatchError(f"{name}: a model config must end in .yaml (ultralytics loads other names as weights)")
    if path.exists() and not force:
        raise PatchError(f"{path} exists: pass --force to overwrite it")
    guessed = guess_scale(name)
    stem = Path(name).stem
    if guessed and guessed != req.scale:
        raise PatchError(
            f"{name}: ultralytics reads scale '{guessed}' from this name but the file is scale '{req.scale}': "
            f"name it {output_name(req)}"
        )
    if not guessed and MODEL_NAME_RE.search(stem):
        raise PatchError(
            f"{name}: a scale-less model name is loaded in place of the scaled files next to it "
            f"(ultralytics <= 8.4.100): name it {output_name(req)}"
        )
    unified = unified_path(path)
    if unified != str(path):
        sibling = Path(unified)
        if sibling.exists():
            warnings.append(
                f"{sibling} exists: ultralytics up to 8.4.100 loads it instead of {name} "
                f"(it takes the scale-less name first); delete or rename it"
            )
        if _release_tries_unified_first(target) and _in_release(target, sibling.name):
            raise PatchError(
                f"{name}: ultralytics {target.version} would load its own {sibling.name} instead "
                f"(it tries the scale-less name first): name it {output_name(req)}"
            )
    elif not guessed:
        warnings.append(f"{name} carries no scale: it still builds scale {req.scale} (its only 'scales' row)")
    return warnings


def _release_tries_unified_first(target: Target) -> bool:
    try:
        tasks = (target.package / "nn" / "tasks.py").read_text(encoding="utf-8")
    except OSError:
        return version_tuple(target.version) <= (8, 4, 100)
    return "check_yaml(unified_path, hard=False)" in tasks


def _in_release(target: Target, name: str) -> bool:
    for rel in ("cfg", "models"):
        root = target.package / rel
        if root.is_dir() and any(root.rglob(name)):
            return True
    return False
