r"""RCAN: Residual Channel Attention Networks.

Zhang, Li, Li, Wang, Zhong, Fu, "Image Super-Resolution Using Very Deep Residual Channel
Attention Networks", ECCV 2018.

Residual-in-residual: ``n_groups`` residual groups, each ``n_blocks`` residual channel
attention blocks (RCAB: conv-ReLU-conv then channel attention, with a skip) and a closing
conv with a short skip; a long skip around the groups; sub-pixel upsampling; tail conv.
Channel attention: global average pool -> 1x1 conv (C/r) -> ReLU -> 1x1 conv (C) -> sigmoid,
multiplied onto the features. 2D and 3D, a scale per axis.

Sizes (3D, x2 / 1x1x4 parameters): ``tiny`` (16 feats, 3 groups x 2 blocks, r = 2: 168.8k /
141.1k) and ``base`` (64 feats, 10 groups x 7 blocks, r = 16: 17.64 M / 17.20 M) are
capacity-matched to crfm (within +-10 %); ``paper`` is the paper's network (64 feats,
10 groups x 20 blocks, r = 16: 46.5 M / 46.0 M in 3D).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crfm_bench.models.base import SRModel
from crfm_bench.models.conv import conv_nd, spatial_axes
from crfm_bench.models.registry import register_model, resolve_options
from crfm_bench.models.subpixel import SubPixelUpsampler

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_feats": 16, "n_groups": 3, "n_blocks": 2, "reduction": 2},
    "base": {"n_feats": 64, "n_groups": 10, "n_blocks": 7, "reduction": 16},
    "paper": {"n_feats": 64, "n_groups": 10, "n_blocks": 20, "reduction": 16},
}


class ChannelAttention(nn.Module):
    """RCAN channel attention: ``x * sigmoid(W2 relu(W1 avgpool(x)))``.

    The squeeze bias starts at 0 (not torch's uniform init): with few hidden units (tiny
    sizes) a random negative bias on every unit kills the ReLU for good at initialisation.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            conv_nd(spatial_dims, channels, hidden, 1),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, hidden, channels, 1),
            nn.Sigmoid(),
        )
        nn.init.zeros_(self.mlp[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mlp(x.mean(dim=spatial_axes(x), keepdim=True))


class RCAB(nn.Module):
    """Residual channel attention block: ``x + CA(conv(relu(conv(x))))``."""

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_nd(spatial_dims, channels, channels),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, channels, channels),
            ChannelAttention(spatial_dims, channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """``n_blocks`` RCABs and a conv, with a short skip: ``x + conv(RCAB...(x))``."""

    def __init__(self, spatial_dims: int, channels: int, n_blocks: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(RCAB(spatial_dims, channels, reduction) for _ in range(n_blocks)),
            conv_nd(spatial_dims, channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(SRModel):
    """RCAN (Zhang et al. 2018) for ``spatial_dims`` 2/3 and an integer scale per axis.

    Channels-last in 2D and 3D (:attr:`SRModel.channels_last_dims`): its training step
    measured 13-18 % faster so on the CPU (tiny, x2, batch 4: HR 24^3 62.0 -> 50.8 ms, 64^3
    1132 -> 985 ms; 2D 96^2, batch 16: 105.5 -> 87.4 ms)."""

    channels_last_dims = (2, 3)

    def __init__(
        self,
        spatial_dims: int,
        scale: object,
        n_feats: int = 64,
        n_groups: int = 10,
        n_blocks: int = 20,
        reduction: int = 16,
    ) -> None:
        super().__init__(spatial_dims, scale)
        self.head = conv_nd(spatial_dims, 1, n_feats)
        self.body = nn.Sequential(
            *(ResidualGroup(spatial_dims, n_feats, n_blocks, reduction) for _ in range(n_groups)),
            conv_nd(spatial_dims, n_feats, n_feats),
        )
        self.upsampler = SubPixelUpsampler(spatial_dims, n_feats, self.scale)
        self.tail = conv_nd(spatial_dims, n_feats, 1)

    def upsample(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        f = self.head(lr)
        f = f + self.body(f)
        return self.tail(self.upsampler(f))


@register_model(
    "rcan",
    family="rcan",
    needs_reference=False,
    trainable=True,
    description="RCAN: residual-in-residual groups of channel-attention blocks",
    citation="Zhang et al., ECCV 2018",
)
def rcan(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
    return RCAN(spatial_dims, scale, **resolve_options("rcan", PRESETS, size, overrides))
