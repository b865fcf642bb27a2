"""Convolutional Block Attention Module (CBAM), written from the paper, under the paper's name.

Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So Kweon. "CBAM: Convolutional Block Attention Module". ECCV 2018,
arXiv:1807.06521.

Section 3: channel attention then spatial attention, ``F' = M_c(F) * F`` and ``F'' = M_s(F') * F'`` (eq. 1).
Channel attention: one shared MLP (one hidden layer of ``C/r`` units, ``r = 16``) over the average-pooled and the
max-pooled descriptors, summed, then a sigmoid (eq. 2). Spatial attention: the channel-wise average and max maps,
concatenated, through one 7x7 convolution and a sigmoid (eq. 3).

ultralytics ships a class of this name too (``nn/modules/conv.py``: a lighter variant, channel attention from the
average pool only), which its ``parse_model`` does not read. So this file's class is registered under another name::

    mhsa-patch apply --layer examples/layers/cbam.py --as CBAMBlock
    mhsa-patch gen-yaml --scale n --layer CBAMBlock

(``mhsa-patch apply --layer CBAM`` registers ultralytics' own class instead.)
"""

import torch
from torch import nn


class ChannelGate(nn.Module):
    """``M_c``: the shared MLP over average- and max-pooled channel descriptors (eq. 2)."""

    def __init__(self, channels, r=16):
        super().__init__()
        hidden = max(channels // r, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x):
        avg = self.mlp(x.mean(dim=(2, 3)))
        mx = self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(avg + mx)[:, :, None, None]


class SpatialGate(nn.Module):
    """``M_s``: a 7x7 convolution over the channel-wise average and max maps (eq. 3)."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))


class CBAM(nn.Module):
    """Channel then spatial attention on ``c1`` channels; keeps its input's shape."""

    def __init__(self, c1, r=16, kernel_size=7):
        super(CBAM, self).__init__()
        self.channel = ChannelGate(c1, r)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x):
        return self.spatial(self.channel(x))
