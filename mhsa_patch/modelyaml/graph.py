"""The layer graph of a model config, replayed from ``parse_model``'s arithmetic: channels, strides, readers.

Pure logic over :class:`~mhsa_patch.modelyaml.rows.Row` lists; nothing is built, torch is never imported.

* **Channels.** Scaled modules (Conv, C2f, SPPF, C3k2, C2PSA, ...) give ``make_divisible(min(c2, max_channels) *
  width, 8)``, ``Concat`` sums its inputs, other modules keep their input's channels.
* **Insertion point** (``--at``). ``P3``/``P4``/``P5``: after the *last backbone layer at that stride*, i.e. the
  stage's output, the feature the head reads. A module name: after the backbone layer of that module (it must be
  unique). An integer ``i``: after layer ``i``.
* **Wiring.** The new layer becomes ``i + 1``; every later layer moves by one and every ``from`` is remapped,
  absolute or relative, so that it reads the same feature as before. The layer right after the insertion reads the
  new layer through its ``-1``; every other reader of layer ``i`` reads the new layer too (``lateral="attention"``)
  or keeps reading layer ``i`` (``lateral="pre-attention"``).
"""

from __future__ import annotations

import math
import re

from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.modelyaml.rows import Row, _froms
from mhsa_patch.patches import LAYERS

# parse_model's ``base_modules`` (union over 8.0.98 - 8.4.190): output channels are args[0], scaled by width.
SCALED_MODULES = frozenset(
    {
        "Classify", "Conv", "ConvTranspose", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "C2fPSA",
        "C2PSA", "DWConv", "Focus", "BottleneckCSP", "C1", "C2", "C2f", "C3k2", "RepNCSPELAN4", "ELAN1", "ADown",
        "AConv", "SPPELAN", "C2fAttn", "C3", "C3TR", "C3Ghost", "nn.ConvTranspose2d", "DWConvTranspose2d", "C3x",
        "RepC3", "PSA", "SCDown", "C2fCIB", "A2C2f",
    }
) | frozenset(spec.name for spec in LAYERS if spec.channels == "scaled")  # fmt: skip
# Output heads: their output is not a feature map, nothing can follow them.
HEAD_MODULES = frozenset(
    {
        "Detect", "Segment", "Pose", "OBB", "Classify", "RTDETRDecoder", "WorldDetect", "YOLOEDetect", "YOLOESegment",
        "v10Detect", "Segment26", "Pose26", "OBB26", "YOLOESegment26", "Depth", "SemanticSegment",
    }
)  # fmt: skip
# Modules whose output channels parse_model computes in ways this replay does not follow.
OPAQUE_MODULES = frozenset({"HGStem", "HGBlock", "ResNetLayer", "CBLinear", "CBFuse", "TorchVision", "Index", "AIFI"})
# Modules that keep their input's channels and are not torch.nn modules (parse_model's final ``else``).
PASSTHROUGH_MODULES = frozenset(spec.name for spec in LAYERS if spec.channels == "input")
# Modules that change the stride: stride argument position (None: always 2).
DOWNSAMPLERS = {"Conv": 2, "GhostConv": 2, "DWConv": 2, "SCDown": 2, "Focus": None, "ADown": None, "AConv": None}


# What every release's parse_model unpacks a ``scales`` row into (``depth, width, max_channels = scales[scale]``); a
# fork may unpack more (``depth, width, max_channels, threshold = scales[scale]``): lint.known_modules reads its names.
SCALE_NAMES = ("depth", "width", "max_channels")


def scale_values(row, names=SCALE_NAMES) -> dict:
    """``{name: value}`` of a ``scales`` row as parse_model unpacks it into ``names`` (a ``*rest`` name takes what
    is left over); depth, width and max_channels at their stock positions where ``names`` does not name them."""
    row = list(row)
    star = next((k for k, n in enumerate(names) if n.startswith("*")), None)
    if star is None:
        out = dict(zip(names, row))
    else:
        tail = len(names) - star - 1
        out = {**dict(zip(names[:star], row[:star])), **dict(zip(names[star + 1 :], row[len(row) - tail :]))}
    for k, name in enumerate(SCALE_NAMES):
        if name not in names and k < len(row):
            out.setdefault(name, row[k])
    return out


def make_divisible(x: float, divisor: int = 8) -> int:
    """ultralytics.utils.ops.make_divisible for an int divisor."""
    return int(math.ceil(x / divisor) * divisor)


def replay(rows: list[Row], data: dict, scale: str, imgsz_stride: bool = True, readings=None,
           scale_names=SCALE_NAMES) -> tuple[list, list]:
    """Output channels and stride of every layer, as ``parse_model`` builds them (None where not a feature map)."""
    chans, strides, _ = trace(rows, data, scale, readings, scale_names)
    return chans, strides


def is_known(module: str) -> bool:
    """Whether ``module`` is one whose output channels this replay follows (a stock ultralytics module or ours)."""
    return (
        module in SCALED_MODULES
        or module in HEAD_MODULES
        or module in OPAQUE_MODULES
        or module in PASSTHROUGH_MODULES
        or module.startswith("nn.")
    )


def trace(rows: list[Row], data: dict, scale: str | None, readings=None,
          scale_names=SCALE_NAMES) -> tuple[list, list, list]:
    """:func:`replay` plus, per layer, the first layer of a module this replay does not know (a user's ``BiFPN``,
    ``CBAM`` ...) that its channel count depends on, or None when it depends on none.

    An unknown module is taken to keep its first input's channels and stride (what stock ``parse_model`` records for
    a module without a branch of its own), but its channels are marked as a guess, and so are the channels of every
    layer that inherits them (through ``Concat`` or a width-keeping module). A scaled module (``Conv``, ``C2f`` ...)
    sets its own width from its args, so the mark stops there.

    ``readings``: module name -> ``patches.readings.Reading`` that the target's parse_model applies to its rows (the
    channels it records follow the reading's ``out``); other modules, and every module without it, as the tool reads them.
    ``scale_names``: what the target's parse_model unpacks a ``scales`` row into.
    """
    depth_width = (data.get("scales") or {}).get(scale) if scale is not None else None
    if depth_width is not None:
        values = scale_values(depth_width if isinstance(depth_width, (list, tuple)) else (), scale_names)
        if "width" not in values or "max_channels" not in values:
            raise PatchError(f"the '{scale}' row of 'scales' is not [{', '.join(scale_names)}]: {depth_width!r}")
        width, max_channels = values["width"], values["max_channels"]
    else:
        width, max_channels = data.get("width_multiple", 1.0), float("inf")
    nc = data.get("nc")
    ch_in, stride_in = 3, 1
    chans: list = []
    strides: list = []
    unknown: list = []

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
            c_src, s_src, u_src = [ch_in], [stride_in], [None]
        else:
            c_src = [get(chans, k, i) for k in _froms(f)]
            s_src = [get(strides, k, i) for k in _froms(f)]
            u_src = [get(unknown, k, i) for k in _froms(f)]
        u2 = None
        rd = (readings or {}).get(m)
        if rd is not None:  # one of the patch's layers, read the target's way (patches/readings.py)
            c2, s2 = c_src[0], s_src[0]
            if rd.out == "c2":
                c2 = args[0] if args and isinstance(args[0], (int, float)) and not isinstance(args[0], bool) else None
                if c2 is not None and not (rd.keeps_nc and c2 == nc):
                    c2 = make_divisible(min(c2, max_channels) * width, 8)
        elif m in HEAD_MODULES and m != "Classify":
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
            u2 = next((u for u in u_src if u is not None), None)
        elif m in OPAQUE_MODULES:
            c2, s2 = None, None
        else:  # parse_model's final ``else: c2 = ch[f]``
            c2, s2 = c_src[0], s_src[0]
            u2 = u_src[0] if is_known(m) else i
            if m == "nn.Upsample" and s2 is not None:
                factor = args[1] if len(args) > 1 else 2
                s2 = max(1, int(s2 // factor))
        chans.append(c2)
        strides.append(s2)
        unknown.append(u2 if c2 is not None else None)
    return chans, strides, unknown


def stage_label(stride: int) -> str:
    p = int(round(math.log2(stride))) if stride and stride > 0 else 0
    return f"P{p}/{stride}" if stride and 2**p == stride else f"/{stride}"


def resolve_at(
    at: str | None, rows: list[Row], chans: list, strides: list, n_backbone: int, where: str, name: str = "the layer"
) -> int:
    """The base layer index the layer ``name`` goes after (see the module docstring for the rules)."""
    at = "P5" if at is None else at
    last = len(rows) - 1
    if re.fullmatch(r"P\d+", at):
        want = 2 ** int(at[1:])
        stage = [r.index for r in rows[:n_backbone] if strides[r.index] == want and chans[r.index] is not None]
        if not stage:
            have = sorted({s for s in strides[:n_backbone] if s})
            raise UsageError(
                f"--at {at}: no backbone layer at stride {want} in {where} "
                f"(stages: {', '.join(f'P{int(math.log2(s))}' for s in have)})"
            )
        i = stage[-1]
    elif re.fullmatch(r"-?\d+", at):
        i = int(at)
        if i < 0 or i >= last:
            raise UsageError(f"--at {i}: choose a layer index from 0 to {last - 1} (layer {last} is the output head)")
    else:
        hits = [r.index for r in rows[:n_backbone] if r.module.lower() == at.lower()]
        if not hits:
            names = ", ".join(dict.fromkeys(r.module for r in rows[:n_backbone]))
            raise UsageError(f"--at {at}: not a stage (P3, P4, P5), a layer index, or a backbone module ({names})")
        if len(hits) > 1:
            raise UsageError(
                f"--at {at}: {len(hits)} backbone layers are {rows[hits[0]].module} "
                f"({', '.join(map(str, hits))}): pass the index"
            )
        i = hits[0]
    if chans[i] is None or strides[i] is None:
        raise PatchError(f"--at {at}: layer {i} ({rows[i].module}) does not give a feature map {name} can follow")
    return i


def remap(rows: list[Row], after: int, lateral: str) -> tuple[list, dict, list]:
    """New ``from`` of every base row, the index map, and the new indices of the layers that read the new row."""
    new_froms, index_map, mhsa_at, readers = remap_many(rows, [after], lateral)
    return new_froms, index_map, readers[after]


def remap_many(rows: list[Row], afters, lateral: str, name: str = "new") -> tuple[list, dict, dict, dict]:
    """:func:`remap` for one new row (of layer ``name``) after each base layer of ``afters`` (distinct indices).

    Returns the new ``from`` of every base row, the index map (base index -> new index), the new index of each
    new row (keyed by the base layer it follows) and the new indices of the layers that read it (same keys).
    """
    points = sorted(set(afters))
    if len(points) != len(list(afters)):
        raise PatchError(f"two {name} rows cannot follow the same layer")
    index_map = {}
    shift = 0
    for row in rows:
        index_map[row.index] = row.index + shift
        if row.index in points:
            shift += 1
    mhsa_at = {a: index_map[a] + 1 for a in points}
    new_froms: list = []
    readers: dict = {a: set() for a in points}
    for row in rows:
        o, n_o = row.index, index_map[row.index]
        out = []
        for x in _froms(row.from_):
            a = x if x >= 0 else o + x
            if a < 0:  # the stem's -1: the input image
                out.append(x)
                continue
            if a in mhsa_at and (lateral == "attention" or (o == a + 1 and x == -1)):
                b = mhsa_at[a]  # the serial successor always reads the new row; laterals too with "attention"
                readers[a].add(n_o)
            else:
                b = index_map[a]
            out.append(b - n_o if x < 0 else b)
        new_froms.append(out[0] if isinstance(row.from_, int) else out)
    return new_froms, index_map, mhsa_at, {a: sorted(r) for a, r in readers.items()}
