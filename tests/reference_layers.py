"""Reference layers written from their descriptions, shared by the layer tests and the benchmarks.

* ``TUTORIAL_SOURCE``: the YOLOv5-era tutorials' ``MHSA`` class, verbatim; trained checkpoints come from it.
* ``REFERENCE_BOT3_SOURCE``: BoTNet's CSP block (``BoT3``) and its bottleneck (``BottleneckTransformer``), written
  from the layer's spec, literally, on top of the tutorial's ``MHSA``: the classes the forks paste next to it.

Both are source text, executed into a module namespace by ``reference_module`` as a fork's ``conv.py`` would hold
them, so whole models pickled from them refer to that module by name. Nothing here imports ultralytics: the caller
passes the ``Conv`` class (ultralytics' own in the tests and the benchmark).
"""

from __future__ import annotations

import sys
import types

# The tutorial's class, verbatim: trained checkpoints come from it.
TUTORIAL_SOURCE = '''
class MHSA(nn.Module):
    def __init__(self, n_dims, width=14, height=14, heads=4, pos_emb=False):
        super(MHSA, self).__init__()
        self.heads = heads
        self.query = nn.Conv2d(n_dims, n_dims, kernel_size=1)
        self.key = nn.Conv2d(n_dims, n_dims, kernel_size=1)
        self.value = nn.Conv2d(n_dims, n_dims, kernel_size=1)
        self.pos = pos_emb
        if self.pos:
            self.rel_h_weight = nn.Parameter(torch.randn([1, heads, (n_dims) // heads, 1, int(height)]), requires_grad=True)
            self.rel_w_weight = nn.Parameter(torch.randn([1, heads, (n_dims) // heads, int(width), 1]), requires_grad=True)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        n_batch, C, width, height = x.size()
        q = self.query(x).view(n_batch, self.heads, C // self.heads, -1)
        k = self.key(x).view(n_batch, self.heads, C // self.heads, -1)
        v = self.value(x).view(n_batch, self.heads, C // self.heads, -1)
        content_content = torch.matmul(q.permute(0, 1, 3, 2), k)
        c1, c2, c3, c4 = content_content.size()
        if self.pos:
            content_position = (self.rel_h_weight + self.rel_w_weight).view(1, self.heads, C // self.heads, -1).permute(0, 1, 3, 2)
            content_position = torch.matmul(content_position, q)
            content_position = content_position if (content_content.shape == content_position.shape) else content_position[:, :, :c3, ]
            assert (content_content.shape == content_position.shape)
            energy = content_content + content_position
        else:
            energy = content_content
        attention = self.softmax(energy)
        out = torch.matmul(v, attention.permute(0, 1, 3, 2))
        out = out.view(n_batch, C, width, height)
        return out
'''

# BoT3 from the spec, literally: the shortcut is the boolean ``c1 == c2`` unless ``stride != 1 or c1 != expansion*c2``
# makes it a projection module; the forward adds the bare ``x`` whenever the shortcut is truthy (a module is).
REFERENCE_BOT3_SOURCE = '''
class BottleneckTransformer(nn.Module):
    def __init__(self, c1, c2, stride=1, heads=4, mhsa=True, resolution=None, expansion=4):
        super(BottleneckTransformer, self).__init__()
        self.cv1 = Conv(c1, c2 * expansion, 1, 1)
        w, h = resolution
        cv2 = [MHSA(c2, width=w, height=h, heads=heads)]
        if stride == 2:
            cv2.append(nn.AvgPool2d(2, 2))
        self.cv2 = nn.Sequential(*cv2)
        self.shortcut = c1 == c2
        if stride != 1 or c1 != expansion * c2:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c1, expansion * c2, kernel_size=1, stride=stride), nn.BatchNorm2d(expansion * c2)
            )
        self.fc1 = nn.Linear(c2, c2)

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.shortcut else self.cv2(self.cv1(x))


class BoT3(nn.Module):
    def __init__(self, c1, c2, n=1, e=0.5, e2=1, w=20, h=20):
        super(BoT3, self).__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*[
            BottleneckTransformer(c_, c_, stride=1, heads=4, mhsa=True, resolution=(w, h), expansion=e2)
            for _ in range(n)
        ])

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))
'''


def tutorial_module(name: str, *, conv=None) -> types.ModuleType:
    """A real module named ``name``, registered in ``sys.modules`` (so that pickles refer to it by name, as to
    ultralytics.nn.modules.conv), holding the tutorial's MHSA; with ``conv`` (the ``Conv`` class it builds on) the
    reference BoT3 too. The one way the tests load the tutorial's class. The caller removes ``sys.modules[name]``."""
    import torch
    from torch import nn

    module = types.ModuleType(name)
    module.__dict__.update(torch=torch, nn=nn)
    source = TUTORIAL_SOURCE
    if conv is not None:
        module.__dict__["Conv"] = conv
        source += REFERENCE_BOT3_SOURCE
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    sys.modules[name] = module
    return module


def reference_module(name: str, conv) -> types.ModuleType:
    """``tutorial_module`` with the reference BoT3 built on ``conv``."""
    return tutorial_module(name, conv=conv)
