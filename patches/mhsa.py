"""BoTNet's multi-head self-attention (MHSA), as the YOLOv5-era tutorials define it, made exact, any-size and fast.

Only the ``class MHSA`` definition below is copied into ultralytics' ``nn/modules/conv.py``. The class therefore uses
no module-level helper of this file: it relies on the names ``torch`` and ``nn`` alone, which every ``conv.py``
provides (``import torch`` plus ``import torch.nn as nn`` or ``from torch import nn``), and reaches the functional
API as ``torch.nn.functional``. The imports below only make this file importable on its own.
"""

import torch
from torch import nn


class MHSA(nn.Module):
    """BoTNet multi-head self-attention, a drop-in replacement for the class the YOLOv5-era tutorials paste.

    YAML: ``[-1, 1, MHSA, [width, height, heads, pos_emb]]``; ``parse_model`` prepends the input channels ``n_dims``.

    Formula. Input ``x`` is ``(B, C, H, W)``, ``d = C // heads``; head ``i`` owns channels ``[i*d, (i+1)*d)`` and the
    ``N = H*W`` tokens are the positions in row-major order. With ``q``, ``k``, ``v`` the 1x1-convolution projections
    (``query``, ``key``, ``value``) and ``q_n``, ``k_n``, ``v_n`` the d-vectors of token ``n`` in one head::

        logit[n, m] = q_n . k_m  (+ r_n . q_m  with pos_emb)
        out_n       = sum_m softmax_m(logit[n, :])[m] * v_m          reshaped back to (B, C, H, W)

    where ``r = rel_h_weight + rel_w_weight`` broadcast to the ``width x height`` grid and flattened row-major:
    ``rel_w_weight`` (shape ``(1, heads, d, width, 1)``) runs along the rows (dim 2 of ``x``, H) and ``rel_h_weight``
    (shape ``(1, heads, d, 1, height)``) along the columns (dim 3 of ``x``, W), because the tutorial names dims 2 and 3
    "width, height".

    Quirks kept on purpose (trained checkpoints learned them):
      * no ``1/sqrt(d)`` scaling of the logits;
      * the positional term is ``r_n . q_m``: the position of the *query* token ``n`` dotted with the *content* of
        the *key* token ``m`` (the tutorial's formula, not the paper's ``q_n . r_m``);
      * no residual connection and no output projection;
      * the same parameters (``query``/``key``/``value`` Conv2d(C, C, 1) with bias, ``rel_h_weight``,
        ``rel_w_weight`` drawn from ``randn``) and attributes (``heads``, ``pos``, ``softmax``), so state_dicts and
        pickled models of the tutorial's class load and give the same numbers.

    What changed:
      * positions at any size: at the trained grid (``H == width`` and ``W == height``) the tables are used as they
        are; at any other ``H x W`` (larger, smaller, rectangular, down to 1x1) ``rel_w_weight`` is resized along its
        own axis to ``H`` and ``rel_h_weight`` to ``W`` by linear interpolation (``F.interpolate``, bilinear,
        ``align_corners=False``). The tutorial crashed above the trained grid and silently used the wrong positions
        below it;
      * the fused kernel: attention runs through ``torch.nn.functional.scaled_dot_product_attention(scale=1.0)``,
        which never materialises the ``N x N`` matrix on its memory-saving paths. The positional term folds into the
        same call as ``[q_n; r_n] . [k_m; q_m]``; ``v`` is zero-padded to the same width (the CPU flash kernel needs
        equal head dims) and the padding sliced off. A plain path is kept for a torch without SDPA or its ``scale``;
      * ``ValueError`` at construction when ``n_dims`` is not divisible by ``heads``.
    """

    def __init__(self, n_dims, width=14, height=14, heads=4, pos_emb=False):
        """Build the layer; ``n_dims`` is the input (= output) channel count, prepended by ``parse_model``."""
        super().__init__()
        if int(heads) < 1 or int(n_dims) % int(heads) != 0:
            raise ValueError(
                f"MHSA: the channel count n_dims={n_dims} must be divisible by heads={heads} "
                f"(each of the heads gets n_dims // heads channels)"
            )
        if pos_emb and (int(width) < 1 or int(height) < 1):
            raise ValueError(f"MHSA: pos_emb needs width >= 1 and height >= 1, got width={width}, height={height}")
        self.heads = heads
        self.query = nn.Conv2d(n_dims, n_dims, kernel_size=1)
        self.key = nn.Conv2d(n_dims, n_dims, kernel_size=1)
        self.value = nn.Conv2d(n_dims, n_dims, kernel_size=1)
        self.pos = pos_emb
        if self.pos:
            self.rel_h_weight = nn.Parameter(torch.randn([1, heads, n_dims // heads, 1, int(height)]), requires_grad=True)
            self.rel_w_weight = nn.Parameter(torch.randn([1, heads, n_dims // heads, int(width), 1]), requires_grad=True)
        self.softmax = nn.Softmax(dim=-1)

    # Everything below reads only the tutorial's attributes (heads, pos, softmax, query, key, value, rel_*_weight),
    # so objects unpickled from the tutorial's class run it unchanged.

    @staticmethod
    def _sdpa_supported():
        """True when torch has ``scaled_dot_product_attention`` with a ``scale`` argument (torch >= 2.1)."""
        if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
            return False
        try:
            major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
        except ValueError:
            return True  # an unparsable (development) version of a torch that has SDPA: assume a recent one
        return (major, minor) >= (2, 1)

    def _positions(self, h, w):
        """The positional table ``r`` as ``(1, heads, h*w, d)``: tokens row-major, resized when not the trained grid."""
        rel_h, rel_w = self.rel_h_weight, self.rel_w_weight  # (1, heads, d, 1, height), (1, heads, d, width, 1)
        heads, d, width, height = rel_w.shape[1], rel_w.shape[2], rel_w.shape[3], rel_h.shape[4]
        rows = rel_w.reshape(1, heads * d, width, 1)  # along dim 2 of x (H)
        cols = rel_h.reshape(1, heads * d, 1, height)  # along dim 3 of x (W)
        if h != width:
            rows = torch.nn.functional.interpolate(rows, size=(h, 1), mode="bilinear", align_corners=False)
        if w != height:
            cols = torch.nn.functional.interpolate(cols, size=(1, w), mode="bilinear", align_corners=False)
        r = (rows + cols).reshape(1, heads, d, h * w)
        return r.transpose(2, 3)

    def _project(self, x):
        """``q``, ``k``, ``v`` as ``(B, heads, N, d)`` views with unit stride in the last dim (what fused SDPA needs)."""
        b, c, h, w = x.shape
        heads = self.heads
        tokens = x.reshape(b, c, h * w).transpose(1, 2)  # (B, N, C)
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight], 0).reshape(3 * c, c)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias], 0)
        qkv = torch.nn.functional.linear(tokens, weight, bias)  # (B, N, 3C), contiguous: one GEMM for all three
        # split (not indexing): its backward is one concatenation, not three zero-filled full-size gradients
        q, k, v = (t.reshape(b, h * w, heads, c // heads).transpose(1, 2) for t in qkv.split(c, dim=-1))
        return q, k, v

    def _attend_fused(self, q, k, v, r):
        """``softmax(q k^T [+ r q^T]) v`` through SDPA with ``scale=1.0``; the positional term rides in the head dim."""
        if r is None:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)
        d = q.shape[-1]
        r = r.to(q.dtype).expand(q.shape[0], -1, -1, -1)
        q2 = torch.cat([q, r], -1)  # [q_n; r_n]
        k2 = torch.cat([k, q], -1)  # [k_m; q_m]
        v2 = torch.nn.functional.pad(v, (0, d))  # equal head dims keep the CPU flash kernel; the zeros are sliced off
        return torch.nn.functional.scaled_dot_product_attention(q2, k2, v2, scale=1.0)[..., :d]

    def _attend_plain(self, q, k, v, r):
        """The same attention with an explicit ``N x N`` matrix, for a torch without SDPA's ``scale`` argument."""
        energy = torch.matmul(q, k.transpose(-1, -2))
        if r is not None:
            energy = energy + torch.matmul(r.to(q.dtype), q.transpose(-1, -2))
        softmax = getattr(self, "softmax", None)
        attention = softmax(energy) if softmax is not None else torch.softmax(energy, dim=-1)
        return torch.matmul(attention, v)

    def forward(self, x):
        """``(B, C, H, W) -> (B, C, H, W)``; see the class docstring for the formula."""
        b, c, h, w = x.shape
        q, k, v = self._project(x)
        r = self._positions(h, w) if self.pos else None
        if self._sdpa_supported():
            out = self._attend_fused(q, k, v, r)
        else:
            out = self._attend_plain(q, k, v, r)
        return out.transpose(-1, -2).reshape(b, c, h, w)  # (B, heads, N, d) -> (B, heads, d, N) -> (B, C, H, W)
