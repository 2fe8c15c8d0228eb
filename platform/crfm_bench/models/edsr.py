r"""EDSR: Enhanced Deep Residual Networks for single-image super-resolution.

Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPR Workshops (NTIRE) 2017.

Head conv -> ``n_blocks`` residual blocks (conv-ReLU-conv, *no batch norm*, output scaled by
``res_scale``) -> conv, plus a long skip from the head -> sub-pixel upsampler (x4 as two x2
stages) -> tail conv. Written once for 2D and 3D with a scale per axis. The paper's RGB
mean shift is omitted (single-channel, already normalised MRI).

Sizes (3D, x2 / 1x1x4 parameters): ``tiny`` (16 feats, 8 blocks: 174.1k / 146.4k) and
``base`` (96 feats, 29 blocks: 16.68 M / 15.69 M) are capacity-matched to crfm (within
+-10 %, tests/models/test_capacity.py); ``paper`` is the paper's *baseline* (64 feats,
16 blocks, ``res_scale`` 1: 4.54 M / 4.10 M in 3D; the full EDSR is 256/32/0.1:
``n_feats=256, n_blocks=32, res_scale=0.1``). With ``in_channels=3`` in 2D the baseline has
the published parameter count (1.37 M at x2, "1.5M" in the paper's Table 1, which is x4).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crfm_bench.models.base import SRModel
from crfm_bench.models.conv import conv_nd
from crfm_bench.models.registry import register_model, resolve_options
from crfm_bench.models.subpixel import SubPixelUpsampler

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_feats": 16, "n_blocks": 8, "res_scale": 1.0, "in_channels": 1},
    "base": {"n_feats": 96, "n_blocks": 29, "res_scale": 1.0, "in_channels": 1},
    "paper": {"n_feats": 64, "n_blocks": 16, "res_scale": 1.0, "in_channels": 1},
}


class ResBlock(nn.Module):
    """EDSR residual block: ``x + res_scale * conv(relu(conv(x)))`` (no batch norm)."""

    def __init__(self, spatial_dims: int, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_nd(spatial_dims, channels, channels),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, channels, channels),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(SRModel):
    """EDSR (Lim et al. 2017) for ``spatial_dims`` 2/3 and an integer scale per axis."""

    def __init__(
        self,
        spatial_dims: int,
        scale: object,
        n_feats: int = 64,
        n_blocks: int = 16,
        res_scale: float = 1.0,
        in_channels: int = 1,
    ) -> None:
        super().__init__(spatial_dims, scale)
        self.in_channels = in_channels
        self.head = conv_nd(spatial_dims, in_channels, n_feats)
        self.blocks = nn.ModuleList(
            ResBlock(spatial_dims, n_feats, res_scale) for _ in range(n_blocks)
        )
        self.body_end = conv_nd(spatial_dims, n_feats, n_feats)
        self.upsampler = SubPixelUpsampler(spatial_dims, n_feats, self.scale)
        self.tail = conv_nd(spatial_dims, n_feats, in_channels)

    def body(self, f: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """Residual blocks then the closing conv (LR grid, (B, C, *S) -> (B, C, *S))."""
        for block in self.blocks:
            f = block(f)
        return self.body_end(f)

    def upsample(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        f = self.head(lr)
        f = f + self.body(f, ref)
        return self.tail(self.upsampler(f))


@register_model(
    "edsr",
    family="edsr",
    needs_reference=False,
    trainable=True,
    description="EDSR: residual blocks without batch norm, residual scaling, sub-pixel upsampling",
    citation="Lim et al., CVPR Workshops 2017",
)
def edsr(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
    return EDSR(spatial_dims, scale, **resolve_options("edsr", PRESETS, size, overrides))
