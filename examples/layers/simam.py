"""SimAM, a parameter-free attention module, written from the paper.

Lingxiao Yang, Ru-Yuan Zhang, Lida Li, Xiaohua Xie. "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks". ICML 2021, PMLR 139:11863-11874.

Section 3.2: the minimal energy of neuron ``t`` is ``e_t* = 4 (sigma^2 + lambda) / ((t - mu)^2 + 2 sigma^2 + 2 lambda)``
(eq. 4), with ``mu`` and ``sigma^2`` the mean and variance of its channel over the other ``M - 1 = H*W - 1``
positions; the output is ``X * sigmoid(1 / E)`` (eq. 5), computed per channel as
``(x - mu)^2 / (4 (sigma^2 + lambda)) + 1/2``, ``lambda = 1e-4``. No parameters, and no channel count: ``parse_model``
passes the row's args as they are (``--reads none``, inferred).

    mhsa-patch apply --layer examples/layers/simam.py
    mhsa-patch gen-yaml --scale n --layer SimAM
"""

import torch
from torch import nn


class SimAM(nn.Module):
    """Energy-based attention, ``X * sigmoid(1/E)``; keeps its input's shape."""

    def __init__(self, e_lambda=1e-4):
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x):
        b, c, h, w = x.shape
        m = h * w - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        v = d.sum(dim=(2, 3), keepdim=True) / max(m, 1)
        inverse_energy = d / (4 * (v + self.e_lambda)) + 0.5
        return x * torch.sigmoid(inverse_energy)
