"""What mhsa-patch inserts into ultralytics, described as data.

Each entry names a layer class, the file in this folder that holds its source, and the function in
``parse_model_rules.py`` whose body becomes the layer's branch in ``ultralytics.nn.tasks.parse_model``.
The engine reads these files as text (it never imports torch); tests import them as ordinary modules.
A layer is added here, as data, without touching the engine (tests/test_layers_as_data.py proves it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSpec:
    """One insertable layer."""

    name: str  # class name, as written in model YAMLs and in ultralytics' __all__ lists
    source: str  # file in this folder that defines the class (module-level imports are not copied)
    parse_model_rule: str  # function in parse_model_rules.py; its body, minus docstring and return, is the branch
    summary: str  # one line for the marker comment and the CLI
    helpers: tuple[str, ...] = ()  # other classes of the same file the layer's class uses, inserted before it


def layer_names() -> tuple[str, ...]:
    """The layers' names, in the order apply inserts them (read at call time: ``LAYERS`` is the one list)."""
    return tuple(spec.name for spec in LAYERS)


LAYERS = (
    LayerSpec(
        name="MHSA",
        source="mhsa.py",
        parse_model_rule="prepend_input_channels",
        summary="BoTNet multi-head self-attention",
    ),
    LayerSpec(
        name="BoT3",
        source="bot3.py",
        parse_model_rule="scale_like_c3",
        summary="BoTNet CSP block with MHSA bottlenecks",
        helpers=("BottleneckTransformer",),
    ),
)
