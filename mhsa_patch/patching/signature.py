"""How ``parse_model`` should read a user layer's rows, inferred from its ``__init__`` signature (or given: ``--reads``).

Four readings, each one of ``patches/readings.py`` and a rule of ``patches/parse_model_rules.py``:

========  =====================================================  ==========================  =======================
--reads   the signature                                          the call for ``[f, n, L, args]``  rule
========  =====================================================  ==========================  =======================
input     a first parameter ``c1``, ``channel(s)``,               ``L(c1, *args)``, n in a     prepend_input_channels
          ``in_channels``, ``inp``, ``dim`` ... alone             row; keeps its channels
scaled    ``(c1, c2, ...)``, ``(inp, oup, ...)``,                 ``L(c1, c2, *args[1:])``,    scale_like_conv
          ``(in_channels, out_channels, ...)`` ...                ``c2`` scaled like Conv's
none      no channel parameter at all (SimAM)                     ``L(*args)``; keeps its      pass_args_as_written
                                                                  input's channels
csp       ``(c1, c2, n, ...)``: a repeat count after the          ``L(c1, c2, n, *args[1:])``,  scale_like_c3
          channels                                                built once (as C3)
========  =====================================================  ==========================  =======================

A signature that fits none of them, or more than one, is refused with the choices named (``--reads`` settles it):
an output-channel parameter defaulting to None, a repeat count elsewhere than right after the channels, a channel
parameter that is not first, ``*args`` alone, no ``__init__`` the file shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from mhsa_patch.patching.usersource import Signature

READS = ("input", "scaled", "none", "csp")
# --reads -> (the reading of patches/readings.py, the rule of patches/parse_model_rules.py)
RULES = {
    "input": ("tutorial", "prepend_input_channels"),
    "scaled": ("base_modules", "scale_like_conv"),
    "none": ("fallback", "pass_args_as_written"),
    "csp": ("base_modules+repeat", "scale_like_c3"),
}
# what each reading means, as apply says it back
MEANS = {
    "input": "keeps its input's channels",
    "scaled": "takes input and output channels, the output scaled by width like Conv's",
    "none": "takes no channel count: its args as written, and it keeps its input's channels",
    "csp": "a CSP block: input and output channels scaled like C3's, the repeats built inside",
}
# the layer's output channels: the input's ("input") or args[0] scaled ("scaled")
CHANNELS = {"input": "input", "scaled": "scaled", "none": "input", "csp": "scaled"}

# First parameters that tutorials and forks give the input channels.
IN_NAMES = frozenset({
    "c1", "c", "ch", "channel", "channels", "in_channel", "in_channels", "inp", "in_planes", "inplanes", "in_ch",
    "ch_in", "c_in", "inc", "in_c", "dim", "in_dim", "input_dim", "n_dims", "num_channels", "n_channels", "in_chs",
    "channel_in",
})  # fmt: skip
# Second parameters that give the output channels (with the first above: the "scaled" reading).
OUT_NAMES = frozenset({
    "c2", "oup", "outp", "out_channel", "out_channels", "out_planes", "planes", "out_ch", "ch_out", "c_out", "ouc",
    "out_c", "dim_out", "out_dim", "output_dim", "out_chs", "channel_out",
})  # fmt: skip
REPEATS = "n"


@dataclass(frozen=True)
class Inferred:
    reads: str  # one of READS
    given: bool  # from --reads
    shown: str  # the signature as written: ECA(channel, k_size=3)

    def says(self) -> str:
        """``ECA(channel, k_size=3): keeps its input's channels (reads input)``."""
        how = f"--reads {self.reads}" if self.given else f"reads {self.reads}"
        return f"{self.shown}: {MEANS[self.reads]} ({how})"


class Ambiguous(ValueError):
    """Why the signature fits no reading or several; ``choices``: the readings it might mean."""

    def __init__(self, why: str, choices: tuple[str, ...]):
        super().__init__(why)
        self.why, self.choices = why, choices


def infer(sig: Signature) -> str:
    """The reading of a signature (see the module docstring); raises :class:`Ambiguous`."""
    if not sig.known:
        raise Ambiguous("it has no __init__ the file shows (it inherits one from outside the file)", READS)
    names = [p.name for p in sig.params]
    channel_like = [n for n in names if n in IN_NAMES or n in OUT_NAMES]
    if not names:
        if sig.varargs:
            raise Ambiguous("its __init__ takes *args only", READS)
        return "none"
    first = names[0]
    if first in OUT_NAMES:
        raise Ambiguous(f"its first parameter '{first}' reads as output channels, not input ones", READS)
    if first not in IN_NAMES:
        if channel_like:
            raise Ambiguous(
                f"'{channel_like[0]}' looks like a channel count but is not its first parameter "
                "(parse_model passes channels first)",
                ("none", "input"),
            )
        return "none"
    second = sig.params[1] if len(names) > 1 else None
    if second is not None and second.name in OUT_NAMES:
        if second.default == "None":
            raise Ambiguous(f"'{second.name}=None' may be its output channels or left to default", ("input", "scaled"))
        if len(names) > 2 and names[2] == REPEATS:
            return "csp"
        if REPEATS in names[2:]:
            raise Ambiguous(
                f"its repeat count 'n' is not right after the channels (parse_model puts it third)", ("scaled", "csp")
            )
        return "scaled"
    if second is not None and second.name in IN_NAMES:
        raise Ambiguous(f"'{first}' and '{second.name}' both read as input channels", ("input", "scaled"))
    if REPEATS in names[1:2]:
        raise Ambiguous("a repeat count 'n' right after the input channels, with no output channels", ("input", "csp"))
    return "input"


def decide(sig: Signature, name: str, given: str | None) -> Inferred:
    """The reading: ``given`` (``--reads``) or inferred; raises :class:`Ambiguous` when not given and unclear."""
    shown = sig.shown(name)
    if given is not None:
        return Inferred(given, True, shown)
    return Inferred(infer(sig), False, shown)
