"""Coordinate Attention, written from the paper.

Qibin Hou, Daquan Zhou, Jiashi Feng. "Coordinate Attention for Efficient Mobile Network Design". CVPR 2021,
arXiv:2103.02907.

Section 3.2: the global pooling is factorised into two 1D poolings, along the width (one value per row, ``z^h``,
eq. 2) and along the height (one per column, ``z^w``, eq. 3). Both are concatenated, go through one shared 1x1
convolution ``F1`` with batch normalisation and a non-linearity to ``C/r`` channels (eq. 4), are split again and
mapped back to ``C`` channels by two 1x1 convolutions ``F_h`` and ``F_w`` with a sigmoid (eqs. 5, 6); the output is
``y_c(i, j) = x_c(i, j) * g^h_c(i) * g^w_c(j)`` (eq. 7). The paper uses ``r = 32``, keeps at least 8 hidden channels,
and h-swish as the non-linearity. Its signature takes input and output channels, as the paper's code does, so
``parse_model`` passes ``(c1, c2)`` and scales ``c2`` by width like Conv's (``--reads scaled``, inferred).

    mhsa-patch apply --layer examples/layers/coordatt.py
    mhsa-patch gen-yaml --scale n --layer CoordAtt
"""

import torch
from torch import nn


class CoordAtt(nn.Module):
    """Coordinate attention from ``inp`` to ``oup`` channels (the product of eq. 7 needs ``oup == inp``)."""

    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1)  # F1
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1)  # F_h
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1)  # F_w

    def forward(self, x):
        n, c, h, w = x.shape
        z_h = x.mean(dim=3, keepdim=True)  # (n, c, h, 1): pooled along the width
        z_w = x.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)  # (n, c, w, 1): pooled along the height
        f = self.act(self.bn1(self.conv1(torch.cat([z_h, z_w], dim=2))))
        f_h, f_w = torch.split(f, [h, w], dim=2)
        g_h = torch.sigmoid(self.conv_h(f_h))  # (n, oup, h, 1)
        g_w = torch.sigmoid(self.conv_w(f_w.permute(0, 1, 3, 2)))  # (n, oup, 1, w)
        return x * g_h * g_w
