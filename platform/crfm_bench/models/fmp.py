r"""Feature mutual-projection (FMP): the plug-in module of CRFM.

Wang et al., "Cross-Modality Reference and Feature Mutual-Projection for 3D Brain MRI Image
Super-Resolution", J. Imaging Inform. Med. 37 (2024) 2838-2851,
doi:10.1007/s10278-024-01139-1. The paper names the module and its purpose (capture
cross-scale dependency and cross-modality similarity of MRI features); no code is public,
so this is a **reconstruction** from that description, built from the two methods the
name points to (design: ``CRFM.md``).

``forward(x, ref)``: ``x`` (B, C, *S) trunk features on the LR grid, ``ref`` (B, C, *(S*s))
reference features on the HR grid (``s`` per axis) -> (B, C, *S).

1. **Two HR-side estimates** (:mod:`crfm_bench.models.attention`):
   ``a = CrossScaleAttention(x)`` (follows CSNLN's ``CrossScaleAttention``, Mei et al.,
   CVPR 2020: keys from a downscaled copy, values the finer patches, output on the
   ``s``-times finer grid) and ``b = CrossModalityAttention(x, ref)`` (our analogue for
   the reference: keys and values from the HR reference features, output on the HR grid).
2. **Mutual projection** (follows CSNLN's ``MultisourceProjection``):
   ``h = b + E(a - b)``, ``E`` a residual block on the HR grid: the part of one estimate
   the other lacks is encoded and projected into it. With one estimate only (ablations,
   or no reference) the missing one is absent and ``h = E(a)`` (resp. ``E(b)``), so the
   HR-side processing keeps its depth.
3. **Back-projection with error feedback** (follows DBPN's up-projection unit, Haris et
   al., CVPR 2018, and CSNLN's ``RecurrentProjection``): per iteration
   ``e = x - down(h)`` (the error of the HR estimate against the input, on the LR grid),
   ``h = h + up(e)``. ``up``/``down`` are a transposed/strided convolution with kernel =
   stride = ``s`` and PReLU (DBPN: kernel 6, stride 2, padding 2 at x2; ours has no
   overlap because a 6^3 kernel would cost 27 times more parameters in 3D, and it works
   for any per-axis factor, e.g. (1, 1, 4)).
4. **Back to the trunk** (CSNLN: ``down_sample_2``): ``x + down_out(h)``.

Attention is windowed (windows planned to fit the grid, masked padding, shifted windows
with ``shift=True``, on alternate FMPs in a network), so memory is linear in the volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from crfm_bench.errors import InputError
from crfm_bench.models.attention import CrossModalityAttention, CrossScaleAttention
from crfm_bench.models.capacity import PlainResBlock

_conv = {2: nn.Conv2d, 3: nn.Conv3d}
_deconv = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def down_projection(spatial_dims: int, channels: int, scale: Sequence[int]) -> nn.Sequential:
    """HR -> LR: strided convolution (kernel = stride = ``scale``) and PReLU (DBPN)."""
    s = tuple(scale)
    return nn.Sequential(_conv[spatial_dims](channels, channels, s, stride=s), nn.PReLU())


def up_projection(spatial_dims: int, channels: int, scale: Sequence[int]) -> nn.Sequential:
    """LR -> HR: transposed convolution (kernel = stride = ``scale``) and PReLU (DBPN)."""
    s = tuple(scale)
    return nn.Sequential(_deconv[spatial_dims](channels, channels, s, stride=s), nn.PReLU())


class BackProjection(nn.Module):
    """DBPN error feedback: ``iterations`` times ``h = h + up(x - down(h))``.

    ``forward(x, h) -> (h, e)``: ``x`` (B, C, *S) the LR input, ``h`` (B, C, *(S*s)) an HR
    estimate; returns the corrected estimate and the last LR error ``e = x - down(h)``
    (zero when ``h`` is already consistent with ``x``).
    """

    def __init__(
        self, spatial_dims: int, channels: int, scale: Sequence[int], iterations: int = 1
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"BackProjection needs at least one iteration, got {iterations}")
        self.down = nn.ModuleList(
            down_projection(spatial_dims, channels, scale) for _ in range(iterations)
        )
        self.up = nn.ModuleList(
            up_projection(spatial_dims, channels, scale) for _ in range(iterations)
        )

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = x
        for down, up in zip(self.down, self.up, strict=True):
            e = x - down(h)
            h = h + up(e)
        return h, e


class FMP(nn.Module):
    """Feature mutual-projection: ``forward(x, ref=None) -> x + down_out(back_project(h))``.

    ``cross_scale`` / ``cross_modality`` choose the estimates (at least one; the
    cross-modality one needs ``ref``); ``shift`` uses shifted windows.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        scale: Sequence[int],
        window: int = 8,
        heads: int = 1,
        cross_scale: bool = True,
        cross_modality: bool = True,
        shift: bool = False,
        iterations: int = 1,
    ) -> None:
        super().__init__()
        if not (cross_scale or cross_modality):
            raise ValueError("FMP needs cross_scale or cross_modality")
        self.scale, self.shift = tuple(scale), shift
        self.cross_scale = (
            CrossScaleAttention(spatial_dims, channels, self.scale, window, heads)
            if cross_scale
            else None
        )
        self.cross_modality = (
            CrossModalityAttention(spatial_dims, channels, self.scale, window, heads)
            if cross_modality
            else None
        )
        self.error = PlainResBlock(spatial_dims, channels, channels)
        self.back_projection = BackProjection(spatial_dims, channels, self.scale, iterations)
        self.down_out = down_projection(spatial_dims, channels, self.scale)

    def estimates(
        self, x: torch.Tensor, ref: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The HR-grid estimates ``(a, b)`` of the two attentions (None if absent)."""
        a = self.cross_scale(x, self.shift) if self.cross_scale is not None else None
        b = None
        if self.cross_modality is not None:
            if ref is None:
                raise ValueError("FMP with cross_modality needs reference features")
            b = self.cross_modality(x, ref, self.shift)
        return a, b

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        a, b = self.estimates(x, ref)
        if a is not None and b is not None:
            h = b + self.error(a - b)  # CSNLN MultisourceProjection
        else:
            h = self.error(a if a is not None else b)  # type: ignore[arg-type]
        h, _ = self.back_projection(x, h)
        return x + self.down_out(h)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}"


def check_fmp_options(model: str, options: Mapping[str, Any]) -> None:
    """InputError naming ``model`` unless ``window`` is even (a shifted window moves by half
    a window) and ``heads`` divides the attention embedding (``n_feats // 2``)."""
    if options["window"] % 2:
        raise InputError(f"model '{model}': option window={options['window']} must be even")
    emb = options["n_feats"] // 2
    if emb % options["heads"]:
        raise InputError(
            f"model '{model}': n_feats={options['n_feats']} / 2 is not divisible by "
            f"heads={options['heads']}"
        )
