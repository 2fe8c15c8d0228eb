r"""Sub-pixel convolution in N dimensions with a factor per axis.

Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network", CVPR 2016. torch ships only the 2D, isotropic
``pixel_shuffle``; MRI needs 3D and anisotropic factors such as (1, 1, 4) for thick slices.

Channel layout (identical to ``torch.nn.functional.pixel_shuffle`` in 2D): input channel
``c * prod(f) + flat(o_1, ..., o_d)`` (row-major over the offsets ``o_i < f_i``) becomes output
voxel ``(i_1 f_1 + o_1, ..., i_d f_d + o_d)`` of channel ``c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from crfm_bench.models.conv import conv_nd


def pixel_shuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Depth-to-space: (B, C * prod(f), *S) -> (B, C, *(S * f))."""
    nd = len(factors)
    b, c, *size = x.shape
    if len(size) != nd:
        raise ValueError(f"pixel_shuffle: {len(size)} spatial axes but {nd} factors")
    r = math.prod(factors)
    if c % r:
        raise ValueError(f"pixel_shuffle: {c} channels not divisible by {r}")
    x = x.reshape(b, c // r, *factors, *size)
    perm = [0, 1]
    for i in range(nd):
        perm += [2 + nd + i, 2 + i]
    out = [s * f for s, f in zip(size, factors, strict=True)]
    return x.permute(perm).reshape(b, c // r, *out)


def pixel_unshuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Space-to-depth, the inverse of :func:`pixel_shuffle`: (B, C, *S) -> (B, C*prod(f), *S/f)."""
    nd = len(factors)
    b, c, *size = x.shape
    if len(size) != nd:
        raise ValueError(f"pixel_unshuffle: {len(size)} spatial axes but {nd} factors")
    if any(s % f for s, f in zip(size, factors, strict=True)):
        raise ValueError(f"pixel_unshuffle: shape {tuple(size)} not divisible by {tuple(factors)}")
    split: list[int] = []
    for s, f in zip(size, factors, strict=True):
        split += [s // f, f]
    x = x.reshape(b, c, *split)
    perm = [0, 1, *(3 + 2 * i for i in range(nd)), *(2 + 2 * i for i in range(nd))]
    return x.permute(perm).reshape(b, c * math.prod(factors), *split[0::2])


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def subpixel_stages(scale: Sequence[int]) -> list[tuple[int, ...]]:
    """Split a per-axis scale into sub-pixel stages of prime factors (EDSR: x4 = x2 then x2).

    ``(4, 4, 4)`` -> ``[(2, 2, 2), (2, 2, 2)]``; ``(1, 1, 4)`` -> ``[(1, 1, 2), (1, 1, 2)]``;
    ``(3, 3)`` -> ``[(3, 3)]``.
    """
    per_axis = [_prime_factors(s) for s in scale]
    n = max((len(p) for p in per_axis), default=0)
    return [tuple(p[k] if k < len(p) else 1 for p in per_axis) for k in range(n)]


class SubPixelUpsampler(nn.Sequential):
    """EDSR's upsampler: per stage a 3x3 conv to ``C * prod(f)`` channels then a shuffle.

    (B, C, *S) -> (B, C, *(S * scale)). No activation between stages (as in EDSR).
    """

    def __init__(self, spatial_dims: int, channels: int, scale: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for stage in subpixel_stages(scale):
            layers += [conv_nd(spatial_dims, channels, channels * math.prod(stage)), Shuffle(stage)]
        super().__init__(*layers)


class Shuffle(nn.Module):
    """:func:`pixel_shuffle` as a module."""

    def __init__(self, factors: Sequence[int]) -> None:
        super().__init__()
        self.factors = tuple(factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle(x, self.factors)

    def extra_repr(self) -> str:
        return f"factors={self.factors}"
