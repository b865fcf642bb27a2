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


def scale_like_c3(ch, f, args, n, nc, width, max_channels, make_divisible):
    """A CSP block scaled as parse_model scales C3: width on the output channels, the repeats passed as ``n``.

    YAML ``[-1, 3, BoT3, [1024]]`` in a model with width 0.5, max_channels 1024, and a depth gain that keeps 3
    repeats, on a 256-channel input, builds ``BoT3(256, 512, 3)`` once (``n`` becomes 1: the block repeats inside).
    The names are parse_model's own in every supported release (8.0.98 to 8.4.x): ``ch``, ``f``, ``args``, ``n``
    (its loop variables), ``nc``, ``width``, ``max_channels`` (set at its top) and ``make_divisible`` (imported at
    module level of ``ultralytics/nn/tasks.py``). ``c2 == nc`` stays unscaled, as C3's branch does up to 8.4.100
    (8.4.190's C3 branch scales every layer but Classify).
    """
    c1, c2 = ch[f], args[0]
    if c2 != nc:  # as C3: a width equal to the class count is left as is
        c2 = make_divisible(min(c2, max_channels) * width, 8)
    args = [c1, c2, *args[1:]]
    args.insert(2, n)  # number of repeats, built inside the block
    n = 1
    return c1, c2, args, n


def scale_like_conv(ch, f, args, nc, width, max_channels, make_divisible):
    """A layer that takes input and output channels, scaled as parse_model scales Conv: ``Layer(c1, c2, *rest)``.

    YAML ``[-1, 1, Layer, [1024, 3]]`` in a model with width 0.25 and max_channels 1024, on a 256-channel input,
    builds ``Layer(256, 256, 3)``; ``n`` repeats build ``n`` blocks in a row (parse_model's ``nn.Sequential``), as for
    Conv. ``c2 == nc`` stays unscaled, as in the shared branch up to 8.4.100. A user layer whose ``__init__`` starts
    ``(c1, c2, ...)`` gets this rule (``apply --layer``, reading ``scaled``).
    """
    c1, c2 = ch[f], args[0]
    if c2 != nc:  # as Conv: a width equal to the class count is left as is
        c2 = make_divisible(min(c2, max_channels) * width, 8)
    args = [c1, c2, *args[1:]]
    return c1, c2, args


def pass_args_as_written(ch, f, args):
    """A layer that takes no channel count (SimAM): the row's args as written, its input's channels kept.

    YAML ``[-1, 1, SimAM, [1e-4]]`` builds ``SimAM(1e-4)``, and the next layers see the input's channels. That is
    parse_model's final ``else`` too; the branch of its own says so where a reader of ``parse_model`` looks for it,
    and keeps ``c2`` right when the row reads from another layer than ``-1``.
    """
    c2 = ch[f]
    return c2, args
