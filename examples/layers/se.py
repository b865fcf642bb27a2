"""Squeeze-and-Excitation (SE), written from the paper.

Jie Hu, Li Shen, Gang Sun. "Squeeze-and-Excitation Networks". CVPR 2018, arXiv:1709.01507.

Section 3: the squeeze is global average pooling, ``z_c = 1/(H*W) * sum_ij u_c(i, j)`` (eq. 2); the excitation is
``s = sigmoid(W2 @ relu(W1 @ z))`` with ``W1`` of shape ``(C/r, C)`` and ``W2`` of shape ``(C, C/r)`` (eq. 3), the
reduction ratio ``r = 16`` by default (section 6.1); the output rescales each channel, ``x_c = s_c * u_c`` (eq. 4).

    mhsa-patch apply --layer examples/layers/se.py
    mhsa-patch gen-yaml --scale n --layer SE        # yolov8n-SE.yaml: SE after SPPF
"""

import torch
from torch import nn


class SE(nn.Module):
    """Squeeze-and-Excitation on ``c1`` channels; keeps its input's shape."""

    def __init__(self, c1, r=16):
        super().__init__()
        hidden = max(c1 // r, 1)  # at least one unit: YOLO's narrow scales have 16-channel stages
        self.fc1 = nn.Linear(c1, hidden)  # W1 (with bias, as in the reference implementation)
        self.fc2 = nn.Linear(hidden, c1)  # W2

    def forward(self, x):
        z = x.mean(dim=(2, 3))  # squeeze: (B, C)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))  # excitation: (B, C)
        return x * s[:, :, None, None]  # scale
