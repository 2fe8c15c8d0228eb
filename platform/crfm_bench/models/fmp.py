r"""Feature mutual-projection (FMP): the plug-in module of CRFM.

Wang et al., "Cross-Modality Reference and Feature Mutual-Projection for 3D Brain MRI Image
Super-Resolution", J. Imaging Inform. Med. 37 (2024) 2838-2851,
doi:10.1007/s10278-024-01139-1. The paper names the module and its purpose (capture
cross-scale dependency and cross-modality similarity); no code is public, so this is a
reconstruction from the published description (see CRFM.md):

* ``a`` = cross-scale attention: the target features attend to a 2x-downscaled copy of
  themselves inside local windows (self-exemplar mining, CSNLN: Mei et al., CVPR 2020);
* ``b`` = cross-modality attention: queries from the target, keys/values from the reference
  features ``R`` on the same (LR) grid;
* mutual projection with error feedback (DBPN: Haris et al., CVPR 2018; CSNLN):
  ``e = ResBlock(a - b)``, ``m = b + e``;
* output ``x + conv1x1(m)``.

Without a reference (``cross_modality=False``) only ``a`` is used: ``x + conv1x1(a)``.
Both attentions are windowed (:class:`~crfm_bench.models.attention.WindowedAttention`), so
memory is linear in the volume. Shapes: ``x``, ``ref_feats`` (B, C, *S) -> (B, C, *S).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from crfm_bench.errors import InputError
from crfm_bench.models.attention import WindowedAttention
from crfm_bench.models.conv import conv_nd
from crfm_bench.models.edsr import ResBlock


class FMP(nn.Module):
    """Feature mutual-projection: ``forward(x, ref_feats=None) -> x + conv(projection)``."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        window: int = 8,
        heads: int = 1,
        cross_modality: bool = True,
    ) -> None:
        super().__init__()
        self.cross_scale = WindowedAttention(spatial_dims, channels, window, kv_pool=2, heads=heads)
        self.cross_modality = (
            WindowedAttention(spatial_dims, channels, window, kv_pool=1, heads=heads)
            if cross_modality
            else None
        )
        self.error = ResBlock(spatial_dims, channels) if cross_modality else None
        self.fuse = conv_nd(spatial_dims, channels, channels, 1)

    def forward(self, x: torch.Tensor, ref_feats: torch.Tensor | None = None) -> torch.Tensor:
        a = self.cross_scale(x)
        if self.cross_modality is None or self.error is None:
            return x + self.fuse(a)
        if ref_feats is None:
            raise ValueError("FMP with cross_modality needs reference features")
        b = self.cross_modality(x, ref_feats)
        return x + self.fuse(b + self.error(a - b))


def check_fmp_options(model: str, options: Mapping[str, Any]) -> None:
    """InputError naming ``model`` unless ``window`` is even and ``heads`` divides ``n_feats``."""
    if options["window"] % 2:
        raise InputError(f"model '{model}': option window={options['window']} must be even")
    if options["n_feats"] % options["heads"]:
        raise InputError(
            f"model '{model}': n_feats={options['n_feats']} is not divisible by "
            f"heads={options['heads']}"
        )
