r"""Capacity matching: plain residual blocks that fill a parameter budget.

An ablation that removes a part of a network also removes its parameters; its result then
mixes lost function with lost capacity. :func:`residual_filler` returns plain residual
blocks (``x + conv(relu(conv(x)))``, EDSR-style, no normalisation) whose parameter count
equals a given budget to within one hidden channel: full-width blocks while the budget
allows, then one block with a narrower hidden layer for the remainder.
"""

from __future__ import annotations

import torch
from torch import nn

from crfm_bench.models.conv import conv_nd


class PlainResBlock(nn.Module):
    """``x + conv3(relu(conv3(x)))`` with ``hidden`` channels inside; (B, C, *S) -> same."""

    def __init__(self, spatial_dims: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_nd(spatial_dims, channels, hidden),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def block_params(spatial_dims: int, channels: int, hidden: int) -> int:
    """Parameters of :class:`PlainResBlock` (3^d kernels, biases)."""
    taps = 3**spatial_dims
    return 2 * taps * channels * hidden + hidden + channels


def residual_filler(spatial_dims: int, channels: int, budget: int) -> nn.Sequential:
    """Plain residual blocks with ``budget`` parameters (within one hidden channel).

    Empty if the budget is smaller than half a one-channel block. The last convolution of
    each block starts at zero, so at initialisation the filler is the identity: an ablated
    network starts as the full one without the removed part, and learns to use the
    capacity it got back.
    """
    blocks: list[nn.Module] = []
    full = block_params(spatial_dims, channels, channels)
    remaining = budget
    while remaining >= full:
        blocks.append(PlainResBlock(spatial_dims, channels, channels))
        remaining -= full
    per_hidden = 2 * 3**spatial_dims * channels + 1
    hidden = round((remaining - channels) / per_hidden)
    if hidden >= 1:
        blocks.append(PlainResBlock(spatial_dims, channels, hidden))
    for block in blocks:
        nn.init.zeros_(block.body[2].weight)
        nn.init.zeros_(block.body[2].bias)
    return nn.Sequential(*blocks)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def meta_parameters(build: object) -> int:
    """Parameters of the module ``build()`` returns, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build()  # type: ignore[operator]
    return count_parameters(module)
