r"""MINet: multi-stage integration network for multi-contrast MRI super-resolution.

Feng, Fu, Yuan, Xu, "Multi-Contrast MRI Super-Resolution via a Multi-Stage Integration
Network", MICCAI 2021 (LNCS 12906, pp. 140-149). Reimplemented from the paper's description
for 2D and 3D with a scale per axis:

* two branches of RCAN residual groups (Zhang et al., ECCV 2018): the *reference* branch on
  the HR reference, the *target* branch on the LR target after a head conv and a sub-pixel
  upsampler, so both run on the HR grid;
* multi-stage integration: after every stage ``k`` the two branches' features are
  concatenated, fused by a 1x1 conv and added to the target features that enter stage
  ``k + 1``;
* a layer attention module (LAM) over the stacked outputs of all stages of both branches
  (an N x N affinity between stages, scaled by a learnt ``gamma`` starting at 0) and a
  1x1 conv, in parallel with a channel-spatial attention module (CSAM: a single-channel
  3x3 convolution over the (channel, *space) volume - a (d+1)-D convolution - through a
  sigmoid, ``x + gamma * x * attention``) on the last target features;
* both concatenated, conv, a skip from the upsampled target head, and a tail conv.

Differences from the paper: the auxiliary reconstruction of the reference contrast (its
second loss term) is not produced, since the benchmark scores the target only; the
(d+1)-D CSAM convolution (3 taps along channels) is written as one d-D C -> C convolution
whose weight is banded along the channel axis (the same numbers, on the fast conv path).
Sizes (3D, x2 / 1x1x4 parameters): ``tiny`` (16 feats, 2 stages x 1 block: 183.7k / 155.9k)
and ``base`` (64 feats, 5 stages x 6 blocks: 16.68 M / 16.24 M) are capacity-matched to crfm
(within +-10 %); ``paper`` is the authors' released configuration (64 feats, 5 stages x
10 blocks: 25.6 M / 25.1 M in 3D). The structure is the published one at every size: both
branches run on the HR grid, so at equal parameters MINet costs several times the FLOPs of an
LR-grid network: a training step (batch 4, HR 24^3, fwd + bwd + Adam) is 44.8 GFLOP against
crfm's 10.8 and edsr's 7.3 (benchmarks/fair.py). Nearly all of it is convolutions on the HR
grid (about 6 x HR voxels x batch x the ~128k parameters there), so no choice of width and
depth at this parameter budget makes it cheaper; only fewer parameters would.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from crfm_bench.models.base import SRModel
from crfm_bench.models.conv import conv_nd, conv_nd_fn
from crfm_bench.models.rcan import ResidualGroup
from crfm_bench.models.registry import register_model, resolve_options
from crfm_bench.models.subpixel import SubPixelUpsampler

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_feats": 16, "n_groups": 2, "n_blocks": 1, "reduction": 2},
    "base": {"n_feats": 64, "n_groups": 5, "n_blocks": 6, "reduction": 16},
    "paper": {"n_feats": 64, "n_groups": 5, "n_blocks": 10, "reduction": 16},
}


class LayerAttention(nn.Module):
    """LAM: attention across N stacked feature maps (B, N, C, *S) -> (B, N*C, *S).

    ``energy = F F^T`` over flattened maps; ``softmax(max(energy) - energy)`` weights the maps;
    output ``gamma * (weights @ F) + F`` with ``gamma`` learnt from 0 (Niu et al., HAN,
    ECCV 2020, as used by MINet).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[:2]
        flat = x.reshape(b, n, -1)
        energy = flat @ flat.transpose(1, 2)
        energy = energy.amax(-1, keepdim=True) - energy
        out = torch.softmax(energy, dim=-1) @ flat
        out = self.gamma * out + flat
        return out.reshape(b, -1, *x.shape[3:])


class ChannelSpatialAttention(nn.Module):
    """CSAM: ``x + gamma * x * sigmoid(conv_{d+1}(x))``, a 3-wide conv over (C, *S)."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        fan_in = 3 ** (spatial_dims + 1)
        bound = 1 / math.sqrt(fan_in)
        self.weight = nn.Parameter(
            torch.empty(3, 1, 1, *([3] * spatial_dims)).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        acc = conv_nd_fn(self.spatial_dims)(
            x, self.channel_weight(c, x.dtype), self.bias.expand(c), padding=1
        )
        return x + self.gamma * x * torch.sigmoid(acc)

    def channel_weight(self, channels: int, dtype: torch.dtype) -> torch.Tensor:
        """The (d+1)-D kernel as one d-D conv weight (C, C, 3, ...), banded along channels.

        Output channel ``o`` reads input channel ``o + k - 1`` with the kernel's slice ``k``
        (zero outside the channel range), i.e. ``W[o, i] = w[i - o + 1]`` for ``|i - o| <= 1``.
        One C -> C convolution runs on oneDNN's fast path; three single-channel convolutions
        over shifted planes compute the same numbers at 5-10 times the time of this one in
        fwd + bwd (their weight gradient reduces a batch of B * C one-channel volumes).
        """
        k = torch.arange(3, device=self.weight.device).view(3, 1, 1)
        o = torch.arange(channels, device=self.weight.device).view(1, channels, 1)
        i = torch.arange(channels, device=self.weight.device).view(1, 1, channels)
        band = (i == o + k - 1).to(dtype)
        return torch.einsum("koi,k...->oi...", band, self.weight[:, 0, 0].to(dtype))


class MINet(SRModel):
    """MINet (Feng et al. 2021): reference and target branches integrated stage by stage."""

    needs_reference = True

    def __init__(
        self,
        spatial_dims: int,
        scale: object,
        n_feats: int = 64,
        n_groups: int = 5,
        n_blocks: int = 10,
        reduction: int = 16,
    ) -> None:
        super().__init__(spatial_dims, scale)
        c = n_feats
        self.ref_head = conv_nd(spatial_dims, 1, c)
        self.target_head = conv_nd(spatial_dims, 1, c)
        self.target_up = SubPixelUpsampler(spatial_dims, c, self.scale)
        self.ref_groups = nn.ModuleList(
            ResidualGroup(spatial_dims, c, n_blocks, reduction) for _ in range(n_groups)
        )
        self.target_groups = nn.ModuleList(
            ResidualGroup(spatial_dims, c, n_blocks, reduction) for _ in range(n_groups)
        )
        self.integrate = nn.ModuleList(conv_nd(spatial_dims, 2 * c, c, 1) for _ in range(n_groups))
        self.layer_attention = LayerAttention()
        self.layer_conv = conv_nd(spatial_dims, 2 * n_groups * c, c)
        self.csam = ChannelSpatialAttention(spatial_dims)
        self.merge = conv_nd(spatial_dims, 2 * c, c)
        self.tail = conv_nd(spatial_dims, c, 1)

    def upsample(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        r = self.ref_head(ref)
        t0 = self.target_up(self.target_head(lr))
        t = t0
        stages_r, stages_t = [], []
        for ref_group, target_group, integrate in zip(
            self.ref_groups, self.target_groups, self.integrate, strict=True
        ):
            r = ref_group(r)
            t = target_group(t)
            stages_r.append(r)
            stages_t.append(t)
            t = t + integrate(torch.cat([r, t], 1))
        layers = self.layer_conv(self.layer_attention(torch.stack(stages_r + stages_t, 1)))
        f = self.merge(torch.cat([self.csam(t), layers], 1)) + t0
        return self.tail(f)


@register_model(
    "minet",
    family="minet",
    needs_reference=True,
    trainable=True,
    description="MINet: reference and target branches fused stage by stage, layer + "
    "channel-spatial attention",
    citation="Feng et al., MICCAI 2021",
)
def minet(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
    return MINet(spatial_dims, scale, **resolve_options("minet", PRESETS, size, overrides))
