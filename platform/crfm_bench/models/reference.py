r"""Reference encoder: HR reference features brought onto the LR grid without losing detail.

The co-registered HR reference ``r`` (B, 1, *S) - and, for CRFM, its gradient magnitude
``g`` (:func:`crfm_bench.models.gradient.gradient_magnitude`) - is folded onto the LR grid
``S / scale`` by space-to-depth (pixel-unshuffle: every HR voxel of an LR cell becomes a
channel, so nothing is averaged away), then two convolutions with a ReLU between give
shared features, and a 1x1 head per output:

* ``R``: reference features (B, C, *S/scale), keys/values of cross-modality attention
  (only if ``with_features``);
* ``G``: gradient features (B, C, *S/scale), injected into the trunk (only if
  ``with_gradient``; ``g`` is then also an input plane).

Part of the CRFM reconstruction (Wang et al. 2024, doi:10.1007/s10278-024-01139-1; see
:mod:`crfm_bench.models.crfm`) and reused by plug-in variants such as ``edsr-fmp``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from crfm_bench.models.conv import conv_nd
from crfm_bench.models.gradient import gradient_magnitude
from crfm_bench.models.subpixel import pixel_unshuffle


class ReferenceEncoder(nn.Module):
    """``forward(ref) -> (R, G)``; ``R`` is None unless ``with_features``, ``G`` unless
    ``with_gradient``."""

    def __init__(
        self,
        spatial_dims: int,
        scale: Sequence[int],
        channels: int,
        with_gradient: bool = True,
        with_features: bool = True,
    ) -> None:
        super().__init__()
        if not (with_gradient or with_features):
            raise ValueError("ReferenceEncoder needs with_gradient or with_features")
        self.scale = tuple(scale)
        self.with_gradient = with_gradient
        in_ch = (2 if with_gradient else 1) * math.prod(self.scale)
        self.stem = nn.Sequential(
            conv_nd(spatial_dims, in_ch, channels),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, channels, channels),
        )
        self.ref_head = conv_nd(spatial_dims, channels, channels, 1) if with_features else None
        self.grad_head = conv_nd(spatial_dims, channels, channels, 1) if with_gradient else None

    def forward(self, ref: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        planes = torch.cat([ref, gradient_magnitude(ref)], 1) if self.with_gradient else ref
        f = self.stem(pixel_unshuffle(planes, self.scale))
        grad = self.grad_head(f) if self.grad_head is not None else None
        feats = self.ref_head(f) if self.ref_head is not None else None
        return feats, grad
