"""BoTNet's CSP block (``BoT3``) and its bottleneck (``BottleneckTransformer``), as the YOLOv5-era forks define them.

Only the two ``class`` definitions below are copied into ultralytics' ``nn/modules/conv.py``, after our ``MHSA``
class. They therefore use no module-level helper of this file: they name ``torch``, ``nn``, ``Conv`` (ultralytics'
``Conv(c1, c2, k=1, s=1, p=None, g=1, d=1, act=True)``, defined in ``conv.py`` of every release since 8.0.98) and
``MHSA`` alone. The imports below only make this file importable on its own (as ``mhsa_patch.patches.bot3`` or as
``patches.bot3`` from a checkout); the relative import keeps the sibling ``mhsa.py`` the one ``MHSA``.
"""

import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv

from .mhsa import MHSA


class BottleneckTransformer(nn.Module):
    """BoTNet's bottleneck: a 1x1 ``Conv``, ``MHSA`` (and a 2x2 average pool when ``stride == 2``), plus a shortcut.

    Parameters, attribute names and shapes are those of the forks' class, so their trained checkpoints load:
    ``cv1 = Conv(c1, c2 * expansion, 1, 1)``, ``cv2 = nn.Sequential(MHSA(c2, width=w, height=h, heads=heads)
    [, nn.AvgPool2d(2, 2)])`` with ``(w, h) = resolution``, ``shortcut`` a ``Conv2d(c1, expansion * c2, 1, stride)`` +
    ``BatchNorm2d`` module when ``stride != 1 or c1 != expansion * c2``, else the boolean ``c1 == c2``, and an unused
    ``fc1 = nn.Linear(c2, c2)`` that the checkpoints hold, its ``weight`` and ``bias`` kept as buffers (see
    ``unused_linear``): the same state_dict keys, no Parameter without a gradient.

    ``MHSA`` is built as the forks call it, without ``pos_emb``, so it has no positional tables: ``resolution`` sets
    no parameter and changes no number, and the block runs at any input size. ``resolution=None`` falls back to
    MHSA's defaults (the forks crash on it).

    Forward: ``x + cv2(cv1(x))`` when ``shortcut`` is ``True``, ``cv2(cv1(x))`` when it is ``False``, and
    ``shortcut(x) + cv2(cv1(x))`` when it is the projection module. (Read literally, "``x + ...`` when the shortcut
    is truthy" adds the bare ``x`` there too, which crashes whenever the module exists: it exists exactly when
    ``x`` and ``cv2(cv1(x))`` differ in channels or stride.) ``BoT3`` builds ``c1 == c2`` and ``stride == 1``
    blocks with ``expansion = e2 = 1``: the shortcut is ``True`` and both readings agree.

    ``expansion``: ``cv1`` outputs ``c2 * expansion`` channels but ``MHSA`` takes ``c2``, so only ``expansion == 1``
    runs (any other value fails at the first forward, as in the forks, whose default ``expansion=4`` is never used).
    """

    def __init__(self, c1, c2, stride=1, heads=4, mhsa=True, resolution=None, expansion=4):
        """Build the block; see the class docstring. Only ``mhsa=True`` (BoTNet's block) is defined."""
        super().__init__()
        if not mhsa:
            raise ValueError("BottleneckTransformer: only mhsa=True (BoTNet's attention bottleneck) is defined")
        w, h = (14, 14) if resolution is None else resolution
        self.cv1 = Conv(c1, c2 * expansion, 1, 1)
        layers = [MHSA(c2, width=w, height=h, heads=heads)]
        if stride == 2:
            layers.append(nn.AvgPool2d(2, 2))
        self.cv2 = nn.Sequential(*layers)
        self.shortcut = c1 == c2
        if stride != 1 or c1 != expansion * c2:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c1, expansion * c2, kernel_size=1, stride=stride),
                nn.BatchNorm2d(expansion * c2),
            )
        self.fc1 = self.unused_linear(nn.Linear(c2, c2))  # trained checkpoints hold it; the forward never uses it

    @staticmethod
    def unused_linear(fc1):
        """``fc1`` with its ``weight`` and ``bias`` turned from Parameters into buffers (the same keys and values).

        Why: a Parameter the forward never uses gets no gradient, and DistributedDataParallel without
        ``find_unused_parameters`` (ultralytics 8.0 to 8.2, and 8.4 with ``compile=True``) then stops at the second
        iteration. Buffers stay in the state_dict, so checkpoints that hold ``fc1.weight``/``fc1.bias`` load strictly.
        """
        for name in ("weight", "bias"):
            tensor = getattr(fc1, name, None)
            if isinstance(tensor, nn.Parameter):
                delattr(fc1, name)
                fc1.register_buffer(name, tensor.detach())
        return fc1

    def __setstate__(self, state):
        """A block unpickled from an older checkpoint (``fc1`` as Parameters) gets the buffers too."""
        super().__setstate__(state)
        fc1 = self._modules.get("fc1")
        if isinstance(fc1, nn.Module):
            self.unused_linear(fc1)

    def forward(self, x):
        """``(B, c1, H, W) -> (B, c2, H, W)`` (``H/2 x W/2`` with ``stride == 2``)."""
        out = self.cv2(self.cv1(x))
        if isinstance(self.shortcut, nn.Module):
            return self.shortcut(x) + out
        return x + out if self.shortcut else out


class BoT3(nn.Module):
    """BoTNet's CSP block: C3 with ``BottleneckTransformer`` blocks (``MHSA`` inside) in place of its bottlenecks.

    YAML: ``[-1, n, BoT3, [c2, e, e2, w, h]]`` (all but ``c2`` optional); ``parse_model`` scales ``c2`` and repeats
    like C3's and passes ``BoT3(c1, c2, n, ...)``. ``c_ = int(c2 * e)``; ``cv1``, ``cv2`` are 1x1 ``Conv(c1, c_)``,
    ``cv3`` a 1x1 ``Conv(2 * c_, c2)``, ``m`` the ``n`` blocks ``BottleneckTransformer(c_, c_, stride=1, heads=4,
    mhsa=True, resolution=(w, h), expansion=e2)``. Forward: ``cv3(cat(m(cv1(x)), cv2(x)))``.

    ``w`` and ``h`` are kept for the forks' signature and YAMLs; with MHSA built without positions they change
    nothing, and the block runs at any input size. ``e2`` must stay 1 (see ``BottleneckTransformer``).
    """

    def __init__(self, c1, c2, n=1, e=0.5, e2=1, w=20, h=20):
        """Build the block; ``c1`` and ``n`` come from ``parse_model``, the rest from the YAML row."""
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(
            *(
                BottleneckTransformer(c_, c_, stride=1, heads=4, mhsa=True, resolution=(w, h), expansion=e2)
                for _ in range(n)
            )
        )

    def forward(self, x):
        """``(B, c1, H, W) -> (B, c2, H, W)`` at any ``H x W``."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))
