r"""Image-domain degradation: anti-aliasing blur, then decimation ``x[::s]`` per degraded axis.

Two blurs (DATA.md, "Degradations"):

* ``gaussian``: a Gaussian of FWHM ``fwhm_factor * s`` HR voxels along each degraded axis,
  :math:`\sigma = \mathrm{FWHM} / (2\sqrt{2\ln 2})` (the usual anti-aliasing model of
  image-domain SR benchmarks, e.g. Greenspan, Comput. J. 2009); none on undegraded axes.
* ``slice_profile``: the signal of a thick slice, a box of width ``s`` HR voxels (``s`` mm
  for 1 mm voxels) *centred* on every kept sample, integrated over the piecewise-constant
  HR voxels: for odd ``s`` the weights are ``s`` ones, for even ``s`` they are
  ``[1/2, 1, ..., 1, 1/2]`` (``s + 1`` taps, the two end voxels half inside the box), all
  divided by ``s``.

Both are centred (odd-length, symmetric) kernels followed by ``[::s]``, so LR voxel ``m`` sits
at HR voxel ``m * s`` (origin-aligned; LR affine ``A_hr @ diag(s, 1)``) and an axis of
``N`` voxels gives ``ceil(N / s)`` samples. Edges are handled by clamping (``mode="nearest"``).
Filtering and decimation are done one axis at a time (they commute across axes), so later
axes filter an already smaller array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import ndimage

from crfm_bench.data.volume import Volume
from crfm_bench.degrade.base import SAMPLING, Degradation, decimated_affine
from crfm_bench.errors import InputError
from crfm_bench.scale import Scale, parse_scale

Blur = Literal["gaussian", "slice_profile"]
BLURS: tuple[str, ...] = ("gaussian", "slice_profile")
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def gaussian_sigma(s: int, fwhm_factor: float = 1.0) -> float:
    """Gaussian std in HR voxels for an axis degraded by ``s``: FWHM ``fwhm_factor * s``."""
    return fwhm_factor * s * FWHM_TO_SIGMA


def slice_profile_weights(s: int) -> np.ndarray:
    """Weights (float64, odd length, sum 1) of a box of width ``s`` voxels centred on a voxel.

    ``s = 1``: ``[1]``; ``s = 2``: ``[1/4, 1/2, 1/4]``; ``s = 3``: ``[1/3] * 3``;
    ``s = 4``: ``[1/8, 1/4, 1/4, 1/4, 1/8]``.
    """
    if s < 1:
        raise InputError(f"scale: slice thickness {s} must be >= 1")
    if s % 2:
        w = np.ones(s)
    else:
        w = np.ones(s + 1)
        w[0] = w[-1] = 0.5
    return w / s


def _decimate(data: np.ndarray, axis: int, s: int) -> np.ndarray:
    index = [slice(None)] * data.ndim
    index[axis] = slice(None, None, s)
    return data[tuple(index)]


def blur_decimate(
    data: np.ndarray, scale: Sequence[int], blur: Blur, fwhm_factor: float = 1.0
) -> np.ndarray:
    """Blur then ``[::s]`` along each axis with ``s > 1``.

    ``data``: (X, Y, Z); returns float32 of shape ``ceil((X, Y, Z) / scale)``.
    """
    if blur not in BLURS:
        raise InputError(f"blur: {blur!r} is not one of {', '.join(BLURS)}")
    out = np.asarray(data, dtype=np.float32)
    if len(scale) != out.ndim:
        raise InputError(f"scale: {len(scale)} factors for a {out.ndim}D volume")
    # Most reducing axis first, so later passes work on the smallest array.
    for axis in sorted(range(out.ndim), key=lambda a: -scale[a]):
        s = int(scale[axis])
        if s == 1:
            continue
        if blur == "gaussian":
            out = ndimage.gaussian_filter1d(
                out, gaussian_sigma(s, fwhm_factor), axis=axis, mode="nearest", truncate=4.0
            )
        else:
            out = ndimage.correlate1d(out, slice_profile_weights(s), axis=axis, mode="nearest")
        out = np.ascontiguousarray(_decimate(out, axis, s))
    return out


@dataclass(frozen=True)
class ImageDegradation(Degradation):
    """Anti-aliasing blur (``gaussian`` or ``slice_profile``) then decimation by ``scale``.

    Deterministic: ``apply`` ignores its ``rng`` (kept for the common operator contract).
    """

    domain: ClassVar[str] = "image"
    scale: Scale
    blur: Blur = "gaussian"
    fwhm_factor: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", parse_scale(self.scale))
        if self.blur not in BLURS:
            raise InputError(f"blur: {self.blur!r} is not one of {', '.join(BLURS)}")
        if not self.fwhm_factor > 0:
            raise InputError(f"fwhm_factor: {self.fwhm_factor} must be > 0")

    def lr_shape(self, hr_shape: Sequence[int]) -> tuple[int, ...]:
        """``ceil(N / s)`` per axis."""
        return tuple(-(-int(n) // s) for n, s in zip(hr_shape, self.scale, strict=True))

    def apply(self, volume: Volume, rng: np.random.Generator) -> Volume:
        """LR volume ``ceil(N / s)`` per axis, affine ``A_hr @ diag(s, 1)``."""
        data = blur_decimate(volume.data, self.scale, self.blur, self.fwhm_factor)
        return Volume(data, decimated_affine(volume.affine, self.scale))

    def describe(self) -> dict[str, Any]:
        """Every parameter, plus the effective kernel and the sampling convention."""
        out: dict[str, Any] = {
            "domain": self.domain,
            "scale": list(self.scale),
            "blur": self.blur,
            "fwhm_factor": self.fwhm_factor,
        }
        if self.blur == "gaussian":
            out["sigma_vox"] = [
                round(gaussian_sigma(s, self.fwhm_factor), 6) if s > 1 else 0.0 for s in self.scale
            ]
            out["kernel"] = "gaussian, FWHM = fwhm_factor*s HR voxels, truncate 4 sigma"
        else:
            out["kernel"] = "box of width s HR voxels centred on each kept sample"
        out["edges"] = "nearest (clamp)"
        out["sampling"] = SAMPLING
        return out
