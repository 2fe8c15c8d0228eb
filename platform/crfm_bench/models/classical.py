"""Training-free upsamplers: ``trilinear``, ``tricubic`` and ``zerofill``.

The reference points every learned model must beat. ``trilinear``/``tricubic`` follow the
origin-aligned convention of :mod:`crfm_bench.models.interpolate` (bilinear/bicubic in 2D);
``zerofill`` is zero-filled k-space interpolation, the ideal band-limited interpolation for
LR images made by k-space truncation (:mod:`crfm_bench.degrade.kspace`).
"""

from __future__ import annotations

from typing import Any

import torch

from crfm_bench.degrade.kspace import kspace_zero_fill
from crfm_bench.models.base import SRModel
from crfm_bench.models.interpolate import Mode, origin_aligned_upsample
from crfm_bench.models.registry import register_model, resolve_options

_NO_OPTIONS: dict[str, dict[str, Any]] = {"tiny": {}, "base": {}, "paper": {}}


class Interpolation(SRModel):
    """Separable origin-aligned interpolation (``mode`` ``"linear"`` or ``"cubic"``)."""

    trainable = False

    def __init__(self, spatial_dims: int, scale: object, mode: Mode) -> None:
        super().__init__(spatial_dims, scale)
        self.mode: Mode = mode

    def upsample(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        return origin_aligned_upsample(lr, self.scale, self.mode)


class ZeroFill(SRModel):
    """Zero-filled k-space interpolation, magnitude output.

    The LR spectrum (``norm="forward"`` FFT, centred) is placed in the centre of an HR
    spectrum of zeros and inverted; the result's magnitude is returned. Exact for an HR
    image whose spectrum lies inside the LR band (see ``kspace_zero_fill``).
    """

    trainable = False

    def upsample(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        out_shape = self.output_shape(lr.shape[2:])
        return kspace_zero_fill(lr, out_shape).abs().to(lr.dtype)


@register_model(
    "trilinear",
    family="interpolation",
    needs_reference=False,
    trainable=False,
    description="origin-aligned linear interpolation (bilinear in 2D)",
    citation="separable linear interpolation",
)
def trilinear(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
    resolve_options("trilinear", _NO_OPTIONS, size, overrides)
    return Interpolation(spatial_dims, scale, "linear")


@register_model(
    "tricubic",
    family="interpolation",
    needs_reference=False,
    trainable=False,
    description="origin-aligned separable Keys cubic interpolation, a=-0.5 (bicubic in 2D)",
    citation="Keys, IEEE TASSP 29(6) 1981",
)
def tricubic(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
    resolve_options("tricubic", _NO_OPTIONS, size, overrides)
    return Interpolation(spatial_dims, scale, "cubic")


@register_model(
    "zerofill",
    family="interpolation",
    needs_reference=False,
    trainable=False,
    description="zero-filled k-space interpolation (magnitude); ideal for k-space degradations",
    citation="Bernstein et al., JMRI 14(3) 2001",
    domains=("kspace",),
)
def zerofill(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
    resolve_options("zerofill", _NO_OPTIONS, size, overrides)
    return ZeroFill(spatial_dims, scale)
