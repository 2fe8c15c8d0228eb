r"""EDSR + FMP: CRFM's feature mutual-projection plugged into another backbone.

The CRFM paper (Wang et al. 2024, doi:10.1007/s10278-024-01139-1) calls FMP a plug-in.
This variant shows it: an :class:`~crfm_bench.models.edsr.EDSR` (Lim et al., CVPR-W 2017)
whose residual body is split in two halves with an :class:`~crfm_bench.models.fmp.FMP`
after each (both estimates, the second one with shifted windows), fed with HR reference
features from the image stem of a :class:`~crfm_bench.models.reference.ReferenceEncoder`
(no gradient branch). Needs a reference.

**Equal capacity to ``edsr``** of the same size and scale: residual blocks are removed
until FMP and the reference stem fit the budget of ``edsr``, and the remainder is refilled
with one narrower plain residual block
(:func:`~crfm_bench.models.capacity.residual_filler`), so the comparison with ``edsr``
measures FMP, not extra parameters. ``window``/``heads`` set the FMP attention.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crfm_bench.models.base import SRModel
from crfm_bench.models.capacity import count_parameters, meta_parameters, residual_filler
from crfm_bench.models.edsr import EDSR
from crfm_bench.models.edsr import PRESETS as EDSR_PRESETS
from crfm_bench.models.fmp import FMP, check_fmp_options
from crfm_bench.models.reference import ReferenceEncoder
from crfm_bench.models.registry import register_model, resolve_options

PRESETS: dict[str, dict[str, Any]] = {
    size: {**{k: v for k, v in preset.items() if k != "in_channels"}, "window": 8, "heads": 1}
    for size, preset in EDSR_PRESETS.items()
}
PRESETS["base"]["heads"] = 4

N_FMP = 2


class EDSRFMP(EDSR):
    """EDSR with an FMP after each half of its residual blocks (reference model); with
    ``capacity`` (a parameter count) blocks are dropped and refilled to match it.

    Channels-last in 2D and 3D (:attr:`SRModel.channels_last_dims`): its training step
    measured 10-22 % faster so on the CPU (tiny, x2, batch 4: HR 24^3 182 -> 163 ms, 64^3
    3937 -> 3426 ms; 2D 96^2, batch 16: 311 -> 242 ms), a full-volume inference 14 % (0.97
    -> 0.84 s)."""

    needs_reference = True
    channels_last_dims = (2, 3)

    def __init__(
        self,
        spatial_dims: int,
        scale: object,
        n_feats: int = 64,
        n_blocks: int = 16,
        res_scale: float = 1.0,
        window: int = 8,
        heads: int = 1,
        capacity: int | None = None,
    ) -> None:
        super().__init__(spatial_dims, scale, n_feats, n_blocks, res_scale)
        self.encoder = ReferenceEncoder(spatial_dims, self.scale, n_feats, with_gradient=False)
        self.fmp = nn.ModuleList(
            FMP(spatial_dims, n_feats, self.scale, window, heads, shift=i % 2 == 1)
            for i in range(N_FMP)
        )
        if capacity is not None:
            while len(self.blocks) and count_parameters(self) > capacity:
                del self.blocks[-1]
            missing = max(0, capacity - count_parameters(self))
            self.blocks.append(residual_filler(spatial_dims, n_feats, missing))
        kept = len(self.blocks)
        bounds = [round(i * kept / N_FMP) for i in range(1, N_FMP + 1)]
        self.fmp_after = {b - 1: i for i, b in enumerate(bounds)}

    def body(self, f: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        ref_feats, _ = self.encoder(ref)  # (B, C, *S_hr) on the HR grid
        if -1 in self.fmp_after:  # fewer blocks than FMPs
            f = self.fmp[self.fmp_after[-1]](f, ref_feats)
        for k, block in enumerate(self.blocks):
            f = block(f)
            if k in self.fmp_after:
                f = self.fmp[self.fmp_after[k]](f, ref_feats)
        return self.body_end(f)


@register_model(
    "edsr-fmp",
    family="edsr",
    needs_reference=True,
    trainable=True,
    description="EDSR with CRFM's FMP plug-in (cross-scale + cross-modality), capacity of edsr",
    citation="Lim et al., CVPR-W 2017; Wang et al. 2024, doi:10.1007/s10278-024-01139-1",
)
def edsr_fmp(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
    options = resolve_options("edsr-fmp", PRESETS, size, overrides)
    check_fmp_options("edsr-fmp", options)
    edsr_options = {k: v for k, v in options.items() if k not in ("window", "heads")}
    capacity = meta_parameters(lambda: EDSR(spatial_dims, scale, **edsr_options))
    return EDSRFMP(spatial_dims, scale, **options, capacity=capacity)
