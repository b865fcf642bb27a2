"""How a ``parse_model`` reads a layer's YAML row, described as data: the readings forks use and ours.

A reading says which constructor call parse_model makes from a row ``[from, n, Layer, args]``: the values it puts
first (``c1`` the input channels, ``c2`` the row's ``args[0]`` scaled by width and ``max_channels``, ``n`` the
repeats), how many row arguments it drops before appending the rest, which channel count it records for the layers
that follow, and whether ``n`` repeats the call (``nn.Sequential`` of ``n`` blocks) or goes inside the block.

A reading is recognised in a target's ``parse_model`` from the branch that selects the layer: a branch (its own, or
shared with other modules) whose body computes the reading's call, as ``mhsa_patch/patching/branch_eval.py`` finds by
evaluating it on sample values (``bodies`` are ways forks write it, for the docs and the tests; any other spelling
that computes the same call is the same reading), or the shared branch of scaled modules (``m in base_modules`` /
``m in {Conv, C2f, ...}``), whose body holds every statement of ``base_statements``; there, membership in the set
whose branch holds ``repeat_statement`` (``repeat_modules``) makes the difference between ``base_modules`` and
``base_modules+repeat``. The engine, the lint and gen-yaml read these records; none of them has a rule of its own
per reading.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    name: str  # as status, the journal and the lint name it
    summary: str  # one line, for docs and messages
    lead: tuple[str, ...]  # what parse_model passes first: "c1", "c2" (args[0] scaled), "n" (the repeats)
    drop: int  # row args dropped before the rest is appended: 0 (``*args``) or 1 (``*args[1:]``)
    out: str  # the channels parse_model records for the next layers: "c1" (input's) or "c2"
    repeats_inside: bool  # True: n goes to the class and the layer is built once; False: n blocks in a row
    bodies: tuple[str, ...] = ()  # ways a branch computes this call (recognised by the call, not these spellings)
    base: bool = False  # the reading of the shared branch of scaled modules (see base_statements)
    keeps_nc: bool = True  # c2 equal to the model's nc is not scaled (the shared branch up to 8.4.100)

    def call(self, c1, c2, n, args: list) -> tuple[list, int]:
        """The positional args of one constructor call, and how many blocks parse_model builds in a row."""
        values = {"c1": c1, "c2": c2, "n": n}
        return [values[k] for k in self.lead] + list(args[self.drop :]), (1 if self.repeats_inside else n)

    def row_for(self, intended: list, blocks, values: dict, out: int, raw):
        """``(repeats, args)`` of a row that this reading turns into ``intended`` (a call as another reading makes
        it, with ``"c1"``, ``"c2"``, ``"n"`` left symbolic), built ``blocks`` times (``"n"``: the row's repeats, or
        1); None where no row does. ``values``: what the symbols are here (``n`` after the depth gain); ``out``:
        the channels the layer gives, which parse_model must record; ``raw``: the ``args[0]`` it scales to ``out``.
        """
        k = len(self.lead)
        if list(intended[:k]) != list(self.lead):
            return None  # the reading puts other values first than the call needs
        if (values.get("c1") if self.out == "c1" else out) != out:
            return None  # parse_model would record other channels than the layer gives
        rest = [values[a] if isinstance(a, str) and a in values else a for a in intended[k:]]
        if any(isinstance(a, str) and a in ("c1", "c2", "n") for a in rest):
            return None
        args = [raw, *rest] if self.drop else rest
        if self.drop and self.out != "c2" and "c2" not in self.lead:
            return None  # args[0] would be dropped unread: keep it simple, no such reading is known
        # the row's repeats: where the call takes n (matched above) or the blocks are the repeats, the tool's row's
        return ("n" if "n" in self.lead or blocks == "n" else 1), args


# A branch's body, as the tutorial and the tool's MHSA rule write it: the input channels first, then the YAML args.
TUTORIAL = Reading(
    name="tutorial",
    summary="args = [ch[f], *args]: the input channels, then the row's args",
    lead=("c1",),
    drop=0,
    out="c1",
    repeats_inside=False,
    bodies=(
        "args = [ch[f], *args]",
        "args = [ch[f], *args[0:]]",
        "args = [ch[f]] + args",
        "c2 = ch[f]\nargs = [c2, *args]",
        "args = [ch[f], *args]\nc2 = ch[f]",
    ),
)

# Forks that treat the layer like a Conv for its channels but pass only the input's: c2 is the row's args[0], scaled.
SCALED_CHANNELS = Reading(
    name="scaled-channels",
    summary="c1, c2 = ch[f], args[0]; c2 scaled by width and max_channels; args = [c1, *args[1:]]",
    lead=("c1",),
    drop=1,
    out="c2",
    repeats_inside=False,
    keeps_nc=False,
    bodies=(
        "c1, c2 = ch[f], args[0]\nc2 = make_divisible(min(c2, max_channels) * width, 8)\nargs = [c1, *args[1:]]",
        "c1, c2 = ch[f], args[0]\nif c2 != nc:\n    c2 = make_divisible(min(c2, max_channels) * width, 8)\n"
        "args = [c1, *args[1:]]",
    ),
)

# The shared branch of scaled modules, without and with membership in its repeat set.
BASE_MODULES = Reading(
    name="base_modules",
    summary="in base_modules only: args = [c1, c2, *args[1:]], built n times in a row",
    lead=("c1", "c2"),
    drop=1,
    out="c2",
    repeats_inside=False,
    base=True,
)
BASE_REPEAT = Reading(
    name="base_modules+repeat",
    summary="in base_modules and repeat_modules: args = [c1, c2, n, *args[1:]], built once (as C3)",
    lead=("c1", "c2", "n"),
    drop=1,
    out="c2",
    repeats_inside=True,
    base=True,
)

# No branch selects the layer: parse_model's final ``else: c2 = ch[f]`` calls it with the row's args as they are.
FALLBACK = Reading(
    name="fallback",
    summary="no branch: parse_model's final else, the row's args as they are",
    lead=(),
    drop=0,
    out="c1",
    repeats_inside=False,
)

READINGS = (TUTORIAL, SCALED_CHANNELS, BASE_MODULES, BASE_REPEAT, FALLBACK)

# The name status and the journal give the tool's own branch (its rule is one of the readings above: LayerSpec.reading).
OURS = "mhsa-patch"
# A hand-written branch that computes none of the above (or that the evaluator cannot follow): kept as written, its
# calls are not known.
UNRECOGNISED = "unrecognised"

# The shared branch of scaled modules, in every release 8.0.98 - 8.4.190 (statements of its body).
BASE_STATEMENTS = ("c1, c2 = ch[f], args[0]", "args = [c1, c2, *args[1:]]")
# The statement of the repeat set's branch inside it (``if m in repeat_modules: args.insert(2, n); n = 1``).
REPEAT_STATEMENT = "args.insert(2, n)"


def reading(name: str) -> Reading:
    for r in READINGS:
        if r.name == name:
            return r
    raise KeyError(name)


def names() -> tuple[str, ...]:
    """Every name a reading in force can have (what a journal may record)."""
    return (*(r.name for r in READINGS), OURS, UNRECOGNISED)
