"""``port-weights``: carry a stock checkpoint (yolov8n.pt and its kind) over to the MHSA model, layer by layer.

Why. ``yolo train model=yolov8n-MHSA.yaml pretrained=yolov8n.pt`` matches weights by their state-dict names, which
hold the layer index (``model.12.cv1.conv.weight``). Inserting MHSA after SPPF moves every later layer up by one, so
only the layers before the insertion point load and the whole head silently starts from scratch.

How. Both layer lists are compared: the MHSA model's list without its MHSA rows must be the stock list, layer type
for layer type, with the same wiring (each layer's inputs, once the MHSA rows are looked through). That gives the
map ``stock layer i -> MHSA layer j`` for any insertion point (``j = i`` before it, ``i + 1`` after one MHSA row,
and so on for several). Every tensor of stock layer ``i`` is copied into layer ``j`` under the same name, after a
shape check; the MHSA layers keep their initialisation. A layer that replaces a stock row (``gen-yaml --layer
BoT3``: BoT3 in place of the backbone's last C2f) keeps its index and its initialisation; the replaced layer's
tensors are left behind. The result is saved in ultralytics' own checkpoint format,
so ``yolo train model=OUT.pt`` and ``YOLO("OUT.pt")`` take it as they take ``yolov8n.pt``.

The pure-Python half (the YAML rewrite and the alignment) lives here; the half that needs torch runs in a child
against the target's ultralytics (:mod:`mhsa_patch.child.port`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

from mhsa_patch.errors import PatchError
from mhsa_patch.patches import LAYERS

# Our layers that go in as new rows (``placement="insert"``): port-weights looks through them.
MHSA_NAMES = INSERTED = frozenset(spec.name for spec in LAYERS if spec.placement == "insert")
# Our layers that take the place of a stock row (``placement="replace"``): layer name -> the modules it replaces.
REPLACING = {spec.name: frozenset(spec.replaces) for spec in LAYERS if spec.placement == "replace"}


def inserted(extra=()) -> frozenset:
    """The layers that go in as new rows: the tool's and the user layers of ``extra`` (``LayerSpec``s)."""
    return INSERTED | frozenset(s.name for s in extra if s.placement == "insert")


def replacing(extra=()) -> dict:
    """Layer name -> the stock modules it takes the place of: the tool's and the user layers of ``extra``."""
    return {**REPLACING, **{s.name: frozenset(s.replaces) for s in extra if s.placement == "replace"}}


def module_name(row) -> str:
    """A row's module without its ``nn.``/``torch.nn.`` prefix."""
    return str(row[2]).rsplit(".", 1)[-1]


_module_name = module_name


def mhsa_rows(cfg: dict) -> list[int]:
    """Absolute layer indices of the MHSA rows of a model YAML (a dict as ``yaml.safe_load`` gives it)."""
    rows = list(cfg.get("backbone") or []) + list(cfg.get("head") or [])
    return [i for i, row in enumerate(rows) if _module_name(row) in MHSA_NAMES]


def strip_mhsa(cfg: dict) -> dict:
    """The stock model YAML an MHSA YAML was made from: MHSA rows removed, every ``from`` index renumbered; a row of
    a layer that replaces a stock row (BoT3) turned back into that row (see :func:`_restore_replaced`).

    A reference to an MHSA row becomes a reference to that row's own input (the layer it was inserted after), so
    the result is the model ultralytics ships whatever convention the YAML used for the layers after the insertion.
    """
    cfg = _restore_replaced(cfg, len(list(cfg.get("backbone") or [])))
    return drop_rows(cfg, MHSA_NAMES)


def drop_rows(cfg: dict, names) -> dict:
    """``cfg`` without the rows of the modules ``names``, every ``from`` renumbered; a reference to a dropped row
    becomes a reference to that row's own input (so BoT3 added after SPPF goes and its readers read SPPF)."""
    backbone, head = list(cfg.get("backbone") or []), list(cfg.get("head") or [])
    rows = backbone + head
    drop = {i for i, row in enumerate(rows) if _module_name(row) in names}
    if not drop:
        return copy.deepcopy(cfg)

    def absolute(i: int, f: int) -> int:
        return i + f if f < 0 else f

    def alias(j: int) -> int:
        seen = set()
        while j in drop:
            if j in seen:
                raise PatchError(f"layer {j} ({_module_name(rows[j])}) feeds itself; the YAML is malformed")
            seen.add(j)
            f = rows[j][0]
            if not isinstance(f, int):
                raise PatchError(
                    f"layer {j} ({_module_name(rows[j])}) takes several inputs ({f}); a row of it takes one"
                )
            j = absolute(j, f)
        return j

    new_index, k = {}, 0
    for i in range(len(rows)):
        if i not in drop:
            new_index[i] = k
            k += 1

    def renumber(i: int, f: int) -> int:
        if absolute(i, f) < 0:  # the stem's -1: the input image
            return f
        target = new_index[alias(absolute(i, f))]
        return target - new_index[i] if f < 0 else target

    out_backbone, out_head = [], []
    for i, row in enumerate(rows):
        if i in drop:
            continue
        f = row[0]
        nf = [renumber(i, x) for x in f] if isinstance(f, (list, tuple)) else renumber(i, f)
        new_row = [nf, *copy.deepcopy(list(row[1:]))]
        (out_backbone if i < len(backbone) else out_head).append(new_row)
    stock = copy.deepcopy({k: v for k, v in cfg.items() if k not in ("backbone", "head")})
    stock["backbone"], stock["head"] = out_backbone, out_head
    return stock


def restore_replaced(cfg: dict, extra=()) -> dict:
    """``cfg`` with each row of a layer that replaces a stock row turned back into that row (see below)."""
    return _restore_replaced(cfg, len(list(cfg.get("backbone") or [])), extra)


def _restore_replaced(cfg: dict, n_backbone: int, extra=()) -> dict:
    """``cfg`` with each row of a layer that replaces a stock row (BoT3) turned back into that row: the module it
    replaces that the backbone uses (C3k2 in yolo11/yolo26, else C2f), args from the spec's ``restore_args``
    (``[c2, True]``, what gen-yaml replaced). Exact for gen-yaml's files; for a hand-written one, the likely stock."""
    rows = list(cfg.get("backbone") or []) + list(cfg.get("head") or [])
    specs = {spec.name: spec for spec in (*LAYERS, *extra) if spec.placement == "replace"}
    if not any(_module_name(row) in specs for row in rows):
        return cfg
    used = [_module_name(row) for row in rows[:n_backbone]]
    out = []
    for row in rows:
        spec = specs.get(_module_name(row))
        if spec is not None:
            module = max(spec.replaces, key=lambda m: (used.count(m), -spec.replaces.index(m)))
            c2 = (list(row[3]) or [None])[0]
            args = [c2 if a == "{c2}" else a for a in spec.restore_args]
            row = [copy.deepcopy(row[0]), row[1], module, args]
        out.append(row)
    new = dict(cfg)
    new["backbone"], new["head"] = out[:n_backbone], out[n_backbone:]
    return new


def align(
    src: Sequence[tuple[str, Sequence[int]]], dst: Sequence[tuple[str, Sequence[int]]], extra=()
) -> list[int | None]:
    """Map each layer of ``dst`` (the model with our layers) to its layer in ``src`` (the stock model), ``None`` for
    ours.

    Layers are given as ``(type, absolute input indices)`` (``-1`` resolved; the stem's input is ``[]``). The
    inserted layers of ``dst`` (MHSA) are looked through: what feeds on such a row is taken to feed on that row's
    input. A layer that replaces a stock row (BoT3 in place of C2f) maps to ``None`` too: its type may differ from the
    source's there, and only there, as the spec allows; the wiring must still agree. Raises :class:`PatchError`
    naming the first layer that differs in type or wiring.
    """
    if [(t, list(f)) for t, f in src] == [(t, list(f)) for t, f in dst]:
        return list(range(len(dst)))  # the same architecture (a checkpoint trained on a fork): every layer in place
    INSERTED, REPLACING = inserted(extra), replacing(extra)  # noqa: N806 - the module's sets, with the user layers
    keep = [j for j, (t, _) in enumerate(dst) if t not in INSERTED]
    ours = next((t for t, _ in src if t in INSERTED), None)
    if ours is not None:
        a = "an" if ours[:1].upper() in "AEFHILMNORSX" else "a"
        raise PatchError(
            f"the source already has {a} {ours} layer; port-weights takes a stock checkpoint (yolov8n.pt ...)"
        )
    if len(keep) != len(src):
        looked_through = "/".join(sorted({t for t, _ in dst if t in INSERTED})) or "/".join(sorted(INSERTED))
        raise PatchError(
            f"the source has {len(src)} layers but the model has {len(keep)} besides {looked_through}; another base model"
        )
    to_src = {j: i for i, j in enumerate(keep)}
    dropped = set(range(len(dst))) - set(keep)

    def alias(j: int) -> int:
        while j in dropped:
            ins = dst[j][1]
            if len(ins) != 1:
                raise PatchError(f"layer {j} ({dst[j][0]}) takes several inputs; a row of it takes one")
            j = ins[0]
        return j

    mapping: list[int | None] = [None] * len(dst)
    for j in keep:
        i = to_src[j]
        (st, sf), (dt, df) = src[i], dst[j]
        replaced = st != dt and st in REPLACING.get(dt, ())
        if st != dt and not replaced:
            raise PatchError(f"layer {i} is {st} in the source but layer {j} of the model is {dt}; another base model")
        wired = [to_src.get(alias(x), -1) for x in df]
        if list(sf) != wired:
            raise PatchError(
                f"layer {i} ({st}) takes {list(sf)} in the source but {wired} in the model; another base model"
            )
        mapping[j] = None if replaced else i
    return mapping


# ------------------------------------------------------------------------------------------------- parent side


def port_weights(
    target,
    src: str | Path,
    model_yaml: str | Path,
    out: str | Path,
    *,
    on_event: Callable[[dict], None] | None = None,
    quiet: bool = False,
) -> dict:
    """Run the port in a child against ``target``'s ultralytics; return its report (see ``weights_child``).

    Raises :class:`PatchError` with one line on any refusal (missing file, mismatched shapes, unpatched target).
    """
    from mhsa_patch.child.launch import require_applied, run_child

    src, model_yaml, out = Path(src).expanduser(), Path(model_yaml).expanduser(), Path(out).expanduser()
    if not src.is_file():
        raise PatchError(f"{src}: no such checkpoint")
    if src.suffix != ".pt":
        raise PatchError(f"{src}: expected a .pt checkpoint (yolov8n.pt and its kind)")
    if not model_yaml.is_file():
        raise PatchError(f"{model_yaml}: no such model YAML")
    if model_yaml.suffix not in (".yaml", ".yml"):
        raise PatchError(f"{model_yaml}: expected a model .yaml (as 'mhsa-patch gen-yaml' writes)")
    if out.suffix != ".pt":
        raise PatchError(f"{out}: the output must end in .pt")
    if out.resolve() == src.resolve():
        raise PatchError(f"{out}: would overwrite the source checkpoint; pick another output name")
    if not out.parent.exists():
        raise PatchError(f"{out.parent}: no such folder for the output")
    require_applied(target)
    args = ["--src", str(src.resolve()), "--model", str(model_yaml.resolve()), "--out", str(out.resolve())]
    return run_child(target, "mhsa_patch.child.port", args, on_event=on_event, quiet=quiet)
