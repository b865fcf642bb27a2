"""The rows gen-yaml writes for the target's reading of a layer (``patches/readings.py``), not only for the tool's.

A fork whose ``parse_model`` branch reads MHSA or BoT3 rows otherwise (kept in force by ``apply --force``) needs
other rows for the same model: on a scaled-channel fork, MHSA's row starts with the channels it must record
(``[1024, 14, 14, 4]`` for ``MHSA(256, 14, 14, 4)`` at width 0.25); with BoT3 in ``base_modules`` only, a 3-repeat
BoT3 becomes ``[-1, 1, BoT3, [1024, 3]]`` (``n`` inside the block, as the tool's rule builds it). The model is the
tool's: the call its rule makes, found again under the target's reading, or a refusal when no row gives it.
"""

from __future__ import annotations

from typing import Optional

from mhsa_patch.errors import PatchError
from mhsa_patch.modelyaml.graph import make_divisible
from mhsa_patch.patches.readings import reading


def target_reading(target, layer: str, tool: str = ""):
    """``(Reading or None, how it is named, FILE:LINE or "")`` the target applies to ``layer``'s rows once patched.
    ``tool``: the reading of the tool's rule for a user layer (default: the tool's layer's LayerSpec)."""
    from mhsa_patch.patching.atomic import read_confined
    from mhsa_patch.patching.readings import in_force, spec_of

    own = tool or spec_of(layer).reading
    path = target.file("nn/tasks.py")
    try:
        text = read_confined(target.package, path, 4 * 2**20).decode("utf-8")
    except (OSError, ValueError):
        return reading(own), own, ""
    found = in_force(text, layer, tool)
    if not found.differs:
        return reading(own), own, ""
    return found.rule, found.name, f"{path}:{found.line}"


def _scales(data: dict, scale: Optional[str]) -> tuple[float, float, float]:
    row = (data.get("scales") or {}).get(scale) if scale is not None else None
    if row is not None:
        return float(row[0]), float(row[1]), float(row[2])
    return float(data.get("depth_multiple", 1.0)), float(data.get("width_multiple", 1.0)), float("inf")


def _raw(out: int, width: float, max_channels: float, prefer=None) -> Optional[int]:
    """A row value that parse_model scales to ``out`` channels (None: none does); ``prefer`` (the tool's row's
    first arg, BoT3's 1024) where it does."""
    candidates = [prefer] if isinstance(prefer, int) and not isinstance(prefer, bool) else []
    for v in (*candidates, round(out / width), max_channels):
        if v != float("inf") and make_divisible(min(v, max_channels) * width, 8) == out:
            return int(v)
    return None


def written_row(target, spec, tool_args: list, repeats: int, c1: int, out: int, data: dict, scale: Optional[str]):
    """``(repeats, args)`` of the row that builds, under the target's reading, what the tool's rule builds from
    ``[-1, repeats, Layer, tool_args]`` on ``c1`` input channels (the layer gives ``out``); None where the target
    reads the layer's rows the tool's way. Raises PatchError where no row gives that model there."""
    from mhsa_patch.patches import LAYERS

    rd, name, where = target_reading(target, spec.name, "" if spec in LAYERS else spec.reading)
    if not where:
        return None
    at = f" ({where})"
    if rd is None:
        raise PatchError(
            f"ultralytics at {target.package} reads {spec.name} rows with a branch mhsa-patch does not recognise"
            f"{at}: gen-yaml cannot tell which row builds the intended {spec.name} there"
        )
    depth, width, max_channels = _scales(data, scale)
    n = max(round(repeats * depth), 1) if repeats > 1 else repeats
    intended, blocks = reading(spec.reading).call("c1", "c2", "n", tool_args)
    raw = _raw(out, width, max_channels, prefer=tool_args[0] if tool_args else None)
    got = None if raw is None else rd.row_for(intended, blocks, {"c1": c1, "c2": out, "n": n}, out, raw)
    if got is None:
        call = ", ".join(map(str, [{"c1": c1, "c2": out, "n": n}.get(a, a) if isinstance(a, str) else a
                                   for a in intended]))
        raise PatchError(
            f"ultralytics at {target.package} reads {spec.name} rows as '{name}'{at} ({rd.summary}): no row builds "
            f"the intended {spec.name}({call}) there; make that branch read them as '{spec.reading}' to use gen-yaml"
        )
    rep, args = got
    return (repeats if rep == "n" else rep), args
