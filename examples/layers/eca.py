"""Efficient Channel Attention (ECA), written from the paper.

Qilong Wang, Banggu Wu, Pengfei Zhu, Peihua Li, Wangmeng Zuo, Qinghua Hu. "ECA-Net: Efficient Channel Attention for
Deep Convolutional Neural Networks". CVPR 2020, arXiv:1910.03151.

Section 3.2: after global average pooling, the channel weights come from a 1D convolution across channels, without
dimensionality reduction, ``w = sigmoid(C1D_k(y))`` (eq. 9); its kernel size adapts to the channel count,
``k = |log2(C) / gamma + b / gamma|_odd`` with ``gamma = 2`` and ``b = 1`` (eq. 12): the nearest odd number.

    mhsa-patch apply --layer examples/layers/eca.py
    mhsa-patch gen-yaml --scale n --layer ECA       # yolov8n-ECA.yaml
"""

import math

import torch
from torch import nn


def adaptive_kernel(channels, gamma=2, b=1):
    """``|log2(C)/gamma + b/gamma|_odd`` (eq. 12): the odd integer nearest to it, at least 1."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """ECA on ``channel`` channels; keeps its input's shape. One 1D convolution: ``k`` parameters, no bias."""

    def __init__(self, channel, gamma=2, b=1):
        super().__init__()
        k = adaptive_kernel(channel, gamma, b)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = x.mean(dim=(2, 3))  # (B, C): global average pooling
        y = self.conv(y.unsqueeze(1)).squeeze(1)  # 1D convolution across the channels
        return x * torch.sigmoid(y)[:, :, None, None]
