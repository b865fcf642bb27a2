"""What mhsa-patch inserts into ultralytics, described as data.

Each entry names a layer class, the file in this folder that holds its source, and the function in
``parse_model_rules.py`` whose body becomes the layer's branch in ``ultralytics.nn.tasks.parse_model``.
The engine reads these files as text (it never imports torch); tests import them as ordinary modules.
A layer is added here, as data, without touching the engine (tests/test_layers_as_data.py proves it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSpec:
    """One insertable layer.

    The fields after ``helpers`` say how ``gen-yaml`` writes the layer into a model YAML, how the YAML tools
    (lint, port-weights) read it, and which ``gen-yaml`` options apply; ``mhsa_patch.modelyaml`` names no layer.
    Their defaults describe a width-preserving layer inserted as a new row, without arguments.
    """

    name: str  # class name, as written in model YAMLs and in ultralytics' __all__ lists
    source: str  # file in this folder that defines the class (module-level imports are not copied)
    parse_model_rule: str  # function in parse_model_rules.py; its body, minus docstring and return, is the branch
    summary: str  # one line for the marker comment and the CLI
    helpers: tuple[str, ...] = ()  # other classes of the same file the layer's class uses, inserted before it
    # --- model YAMLs
    placement: str = "insert"  # "insert": a new row after a layer (--at); "replace": takes the place of a stock row
    replaces: tuple[str, ...] = ()  # "replace": stock modules it takes the place of (the backbone's last one)
    restore_args: tuple = ()  # "replace": the stock row's args rebuilt from the layer's ("{c2}"), for the stock model
    channels: str = "input"  # "input": keeps its input's channels; "scaled": args[0] is c2, scaled like C3's
    # YAML args; strings are filled in: "{heads}", "{grid}" (feature size at --imgsz), "{c2}" (the replaced row's)
    row_args: tuple = ()
    row_args_pos_emb: tuple | None = None  # the args with --pos-emb (None: --pos-emb does not apply)
    options: tuple[str, ...] = ()  # gen-yaml options that apply (at, lateral, channels, heads, pos_emb)
    row_note: str = ""  # comment of an inserted row: "{stage}", "{channels}", "{given}", "{heads}", "{positions}"
    file_suffix: str = ""  # of gen-yaml's file names (yolov8n-MHSA.yaml); "" means "-<name>"
    tutorial_state: bool = False  # pickled objects must hold the tutorial's state (checked when loading checkpoints)
    params: Callable | None = None  # (channels, row args) -> parameters an inserted row adds (None: not known)
    lint_args: str = ""  # "attention": the lint explains its args as MHSA's [width, height, heads, pos_emb]
    note: str = ""  # one line: what gen-yaml does with it, for refusals of options that do not apply
    # --- parse_model: the reading (patches/readings.py) the rule above gives; a fork's other reading is kept
    reading: str = "tutorial"
    # --- apply --force: how the models a fork's YAMLs build differ once the tool's class replaces the tutorial's
    # (one clause for the line that says so; "" where they are the same models)
    replaces_tutorial: str = ""

    @property
    def suffix(self) -> str:
        return self.file_suffix or f"-{self.name}"


def _mhsa_params(c: int, args) -> int:
    """MHSA's parameters on ``c`` channels: 3·(C²+C) (q, k, v), plus C·(w+h) with positions."""
    return 3 * (c * c + c) + (c * (args[0] + args[1]) if len(args) > 3 and args[3] else 0)


def _linear_params(c: int) -> int:
    """``nn.Linear(c, c)``'s weight and bias: BottleneckTransformer's ``fc1`` on ``c`` channels."""
    return c * c + c


# yolov8n's BoT3: the backbone's last C2f, [1024, True] at width 0.25 and depth 0.33, gives BoT3(256, 256, n=1), whose
# one BottleneckTransformer works on c_ = int(256 * 0.5) = 128 channels.
YOLOV8N_BOT3_HIDDEN = 128


def layer_names() -> tuple[str, ...]:
    """The layers' names, in the order apply inserts them (read at call time: ``LAYERS`` is the one list)."""
    return tuple(spec.name for spec in LAYERS)


LAYERS = (
    LayerSpec(
        name="MHSA",
        source="mhsa.py",
        parse_model_rule="prepend_input_channels",
        tutorial_state=True,
        summary="BoTNet multi-head self-attention",
        row_args=(14, 14, "{heads}"),
        row_args_pos_emb=("{grid}", "{grid}", "{heads}", True),
        options=("at", "lateral", "channels", "heads", "pos_emb"),
        row_note="{stage}: {channels} channels{given}, {heads} heads{positions}",
        params=_mhsa_params,
        lint_args="attention",
        note="MHSA goes in as a new row after --at (P5 by default)",
    ),
    LayerSpec(
        name="BoT3",
        source="bot3.py",
        parse_model_rule="scale_like_c3",
        summary="BoTNet CSP block with MHSA bottlenecks",
        helpers=("BottleneckTransformer",),
        placement="replace",
        replaces=("C2f", "C3k2"),
        restore_args=("{c2}", True),  # the backbone's last C2f/C3k2 in yolov8, yolo11 and yolo26: [1024, True]
        channels="scaled",
        reading="base_modules+repeat",
        row_args=("{c2}",),
        note="BoT3 takes the place of the backbone's last C2f or C3k2 (BoTNet's placement), with 4 heads and no "
        "positional tables",
        replaces_tutorial=(
            f"same weights, {_linear_params(YOLOV8N_BOT3_HIDDEN):,} fewer trainable parameters on a yolov8n (c·c+c "
            "per BottleneckTransformer of c channels), because fc1 is unused: the tool's class keeps its weight and "
            "bias as buffers, so the checkpoints still load"
        ),
    ),
)
