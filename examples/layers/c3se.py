"""A CSP block with Squeeze-and-Excitation bottlenecks (C3SE), written from the papers.

Chien-Yao Wang, Hong-Yuan Mark Liao, Yueh-Hua Wu, Ping-Yang Chen, Jun-Wei Hsieh, I-Hau Yeh. "CSPNet: A New Backbone
that can Enhance Learning Capability of CNN". CVPR Workshops 2020, arXiv:1911.11929. Section 3.1: the base layer's
feature map is split in two parts; one goes through the dense (here: residual) blocks, the other is carried across;
both are concatenated and fused by a transition layer. The YOLO form (C3) splits with two 1x1 convolutions of
``c2 * e`` channels each and fuses with a third.

Jie Hu, Li Shen, Gang Sun. "Squeeze-and-Excitation Networks". CVPR 2018, arXiv:1709.01507. Section 4 (SE-ResNet):
the SE block recalibrates a residual branch before the identity is added.

``C3SE(c1, c2, n, shortcut, e)``: ``parse_model`` passes the input and output channels and the repeat count, and
builds the block once with ``n`` bottlenecks inside, as for C3 (``--reads csp``, inferred). gen-yaml puts it in place
of the backbone's last C2f/C3k2::

    mhsa-patch apply --layer examples/layers/c3se.py
    mhsa-patch gen-yaml --scale n --layer C3SE
"""

import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv


class SqueezeExcite(nn.Module):
    """The SE gate of the residual branch: ``x * sigmoid(W2 relu(W1 mean(x)))``, reduction ``r``."""

    def __init__(self, c, r=16):
        super().__init__()
        hidden = max(c // r, 1)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class SEBottleneck(nn.Module):
    """A 1x1 then 3x3 ``Conv`` branch, recalibrated by SE, plus the identity when ``shortcut``."""

    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1 = Conv(c, c, 1, 1)
        self.cv2 = Conv(c, c, 3, 1)
        self.se = SqueezeExcite(c)
        self.add = shortcut

    def forward(self, x):
        y = self.se(self.cv2(self.cv1(x)))
        return x + y if self.add else y


class C3SE(nn.Module):
    """CSP: ``cv3(cat(m(cv1(x)), cv2(x)))`` with ``n`` SE bottlenecks in ``m``; ``c1`` in, ``c2`` out."""

    def __init__(self, c1, c2, n=1, shortcut=True, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(SEBottleneck(c_, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))
