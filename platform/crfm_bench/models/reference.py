r"""Reference encoder: two stems, one for the reference image and one for its gradients.

* ``R`` (only if ``with_features``): features of the co-registered HR reference image
  ``r`` (B, 1, *S) alone, kept on the HR grid ``S`` (3x3 conv, PReLU, 1x1 conv), so the
  cross-modality attention of FMP sees the reference's full-resolution detail;
* ``G`` (only if ``with_gradient``): features of the gradient magnitude ``g`` of ``r``
  alone (:func:`crfm_bench.models.gradient.gradient_magnitude`), folded onto the LR grid
  ``S / scale`` by space-to-depth (pixel-unshuffle: every HR voxel of an LR cell becomes a
  channel, nothing is averaged away), then conv, ReLU, conv. ``G`` carries gradients
  only, no raw reference intensities; it is injected into the trunk.

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
    """``forward(ref) -> (R, G)``: ``R`` (B, C, *S) on the HR grid, None unless
    ``with_features``; ``G`` (B, C, *S/scale) on the LR grid, None unless ``with_gradient``."""

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
        self.image_stem = (
            nn.Sequential(
                conv_nd(spatial_dims, 1, channels),
                nn.PReLU(),
                conv_nd(spatial_dims, channels, channels, 1),
            )
            if with_features
            else None
        )
        self.gradient_stem = (
            nn.Sequential(
                conv_nd(spatial_dims, math.prod(self.scale), channels),
                nn.ReLU(inplace=True),
                conv_nd(spatial_dims, channels, channels),
            )
            if with_gradient
            else None
        )

    def forward(self, ref: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        feats = self.image_stem(ref) if self.image_stem is not None else None
        grad = None
        if self.gradient_stem is not None:
            grad = self.gradient_stem(pixel_unshuffle(gradient_magnitude(ref), self.scale))
        return feats, grad
