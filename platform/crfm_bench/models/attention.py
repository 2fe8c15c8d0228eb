r"""Windowed (local) dot-product attention for 2D and 3D feature maps.

Global attention over a 3D volume needs memory quadratic in the number of voxels (a
16^3 grid already gives a 4096 x 4096 matrix per head). Here the grid is cut into
non-overlapping windows of ``window`` voxels per axis (Swin-style local windows: Liu et
al., ICCV 2021) and each window attends only within itself, so memory is
``O(voxels * window^d)``: linear in the volume.

Keys and values may come from another feature map of the same grid (``source``: the
cross-modality attention of CRFM) and may be average-pooled by ``kv_pool`` inside each
window (a downscaled copy of the window: the cross-scale attention of CRFM, after the
self-exemplar idea of CSNLN, Mei et al., CVPR 2020).

Shapes: ``x``, ``source`` (B, C, *S) -> (B, C, *S). Axes that are not a multiple of the
window are replicate-padded and cropped back; windows shrink to the axis length (rounded
up to ``kv_pool``) on short axes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crfm_bench.models.conv import avg_pool_nd, conv_nd


def partition_windows(x: torch.Tensor, window: tuple[int, ...], heads: int) -> torch.Tensor:
    """(B, C, *S) with ``S_i = n_i * w_i`` -> (B * prod(n) * heads, prod(w), C / heads)."""
    b, c, *size = x.shape
    nd = len(size)
    split: list[int] = []
    for s, w in zip(size, window, strict=True):
        split += [s // w, w]
    x = x.reshape(b, heads, c // heads, *split)
    n_axes = [3 + 2 * i for i in range(nd)]
    w_axes = [4 + 2 * i for i in range(nd)]
    x = x.permute(0, *n_axes, 1, *w_axes, 2)
    return x.reshape(-1, math.prod(window), c // heads)


def merge_windows(
    t: torch.Tensor, window: tuple[int, ...], size: tuple[int, ...], batch: int, heads: int
) -> torch.Tensor:
    """Inverse of :func:`partition_windows`: -> (B, C, *size)."""
    nd = len(size)
    counts = [s // w for s, w in zip(size, window, strict=True)]
    ch = t.shape[-1]
    t = t.reshape(batch, *counts, heads, *window, ch)
    # axes: 0 batch, 1..nd counts, nd+1 heads, nd+2..2nd+1 window, 2nd+2 channels
    perm = [0, nd + 1, 2 * nd + 2]
    for i in range(nd):
        perm += [1 + i, nd + 2 + i]
    return t.permute(perm).reshape(batch, heads * ch, *size)


class WindowedAttention(nn.Module):
    """Multi-head attention inside local windows; queries from ``x``, keys/values from
    ``source`` (default ``x``), optionally pooled by ``kv_pool`` per axis.

    ``window`` must be a multiple of ``kv_pool``. Output is a 1x1-conv projection of the
    attended values, shape of ``x``.
    """

    def __init__(
        self, spatial_dims: int, channels: int, window: int = 8, kv_pool: int = 1, heads: int = 1
    ) -> None:
        super().__init__()
        if window % kv_pool:
            raise ValueError(f"window {window} is not a multiple of kv_pool {kv_pool}")
        if channels % heads:
            raise ValueError(f"{channels} channels not divisible by {heads} heads")
        self.window, self.kv_pool, self.heads = window, kv_pool, heads
        self.query = conv_nd(spatial_dims, channels, channels, 1)
        self.key = conv_nd(spatial_dims, channels, channels, 1)
        self.value = conv_nd(spatial_dims, channels, channels, 1)
        self.proj = conv_nd(spatial_dims, channels, channels, 1)

    def window_shape(self, size: tuple[int, ...]) -> tuple[int, ...]:
        """Window per axis for a grid ``size``: ``window``, shrunk on short axes."""
        p = self.kv_pool
        return tuple(min(self.window, -(-s // p) * p) for s in size)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        source = x if source is None else source
        size = tuple(x.shape[2:])
        win = self.window_shape(size)
        q, k, v = self.query(x), self.key(source), self.value(source)
        pad: list[int] = []
        for s, w in zip(reversed(size), reversed(win), strict=True):
            pad += [0, (-s) % w]
        if any(pad):
            q, k, v = (F.pad(t, pad, mode="replicate") for t in (q, k, v))
        padded = tuple(q.shape[2:])
        pool = tuple(self.kv_pool for _ in size)
        k, v = avg_pool_nd(k, pool), avg_pool_nd(v, pool)
        kv_win = tuple(w // self.kv_pool for w in win)
        qw = partition_windows(q, win, self.heads)
        kw = partition_windows(k, kv_win, self.heads)
        vw = partition_windows(v, kv_win, self.heads)
        attn = torch.softmax(qw @ kw.transpose(1, 2) * qw.shape[-1] ** -0.5, dim=-1)
        out = merge_windows(attn @ vw, win, padded, x.shape[0], self.heads)
        if any(pad):
            out = out[(slice(None), slice(None), *(slice(0, s) for s in size))]
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"window={self.window}, kv_pool={self.kv_pool}, heads={self.heads}"
