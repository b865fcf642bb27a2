"""Argument rules for ``parse_model`` branches, as real functions that tests can call.

The engine copies a rule's body (without its docstring and its ``return``) into a new branch
``elif m is <Layer>:`` of the if/elif chain in ``ultralytics.nn.tasks.parse_model``, just before its final
``else: c2 = ch[f]``. The names it uses (``ch``, ``f``, ``args``, ``c2``) are parse_model's own locals.
"""


def prepend_input_channels(ch, f, args):
    """A width-preserving layer: output channels equal input channels, which parse_model passes first.

    YAML ``[-1, 1, MHSA, [14, 14, 4]]`` on a 256-channel input builds ``MHSA(256, 14, 14, 4)``. Setting ``c2`` matters:
    without it, a layer that reads from another index than -1 leaves ``c2`` at the previous layer's width.
    """
    c2 = ch[f]
    args = [c2, *args]
    return c2, args
