"""Dimension-generic layers: one implementation serves 2D and 3D (the MONAI habit).

Every network in :mod:`crfm_bench.models` takes ``spatial_dims`` (2 or 3) and builds its
convolutions and pooling through these constructors, so no model is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crfm_bench.errors import InputError

SPATIAL_DIMS = (2, 3)


def check_spatial_dims(spatial_dims: object) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise InputError naming the value."""
    if isinstance(spatial_dims, bool) or spatial_dims not in SPATIAL_DIMS:
        raise InputError(f"spatial_dims: {spatial_dims!r} is not supported (use 2 or 3)")
    return int(spatial_dims)  # type: ignore[call-overload]


def conv_nd(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True
) -> nn.Module:
    """``Conv2d``/``Conv3d`` with 'same' zero padding for an odd ``kernel_size``."""
    cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return cls(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def conv_nd_fn(spatial_dims: int) -> Callable[..., torch.Tensor]:
    """The functional convolution for ``spatial_dims`` (``F.conv2d`` or ``F.conv3d``)."""
    return F.conv2d if spatial_dims == 2 else F.conv3d


def avg_pool_nd(x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """Non-overlapping average pooling of ``x`` (B, C, *S) by ``kernel`` per spatial axis."""
    if all(k == 1 for k in kernel):
        return x
    pool = F.avg_pool2d if len(kernel) == 2 else F.avg_pool3d
    return pool(x, kernel_size=tuple(kernel), stride=tuple(kernel))


def spatial_axes(x: torch.Tensor) -> tuple[int, ...]:
    """Indices of the spatial axes of a (B, C, *S) tensor."""
    return tuple(range(2, x.ndim))
