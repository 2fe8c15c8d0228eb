r"""Origin-aligned interpolation upsampling (the project's sampling convention).

Every degradation in crfm-bench is *origin-aligned*: LR voxel ``m`` along an axis degraded
by an integer ``s`` sits at HR voxel coordinate ``m * s`` (the LR affine is
``A_hr @ diag(s, 1)`` with the same origin). An upsampler must therefore evaluate the LR
signal at LR coordinate ``u = i / s`` for HR voxel ``i``, *not* on torch's
``align_corners=False`` half-pixel grid. Samples outside ``[0, N - 1]`` are clamped to the
edge (replicate boundary), so the last ``s - 1`` HR voxels of an axis repeat the last sample.

Kernels (separable, applied axis by axis):

* ``"linear"``: 2 taps, weights ``1 - t`` and ``t`` with ``t = u - floor(u)``
  (bilinear in 2D, trilinear in 3D).
* ``"cubic"``: 4 taps at ``floor(u) - 1 ... floor(u) + 2`` with the Keys kernel, ``a = -0.5``
  (R. Keys, "Cubic convolution interpolation for digital image processing", IEEE TASSP
  29(6), 1981), which reproduces polynomials up to degree 2 away from the edges
  (bicubic in 2D, tricubic in 3D).

Used by the ``trilinear``/``tricubic`` models, by CRFM's global residual, and by the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from crfm_bench.errors import InputError

Mode = Literal["linear", "cubic"]
KEYS_A = -0.5


def keys_kernel(t: torch.Tensor, a: float = KEYS_A) -> torch.Tensor:
    """Keys cubic convolution kernel ``W(t)`` (support ``|t| < 2``)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _taps(
    n: int, s: int, mode: Mode, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and weights (each (T, n * s)) of the LR samples feeding each HR voxel."""
    i = torch.arange(n * s, device=device, dtype=torch.float64)
    u = (i / s).clamp(max=n - 1)  # hold the last sample beyond the LR grid
    base = torch.floor(u)
    frac = u - base
    if mode == "linear":
        offsets = [0, 1]
        weights = [1 - frac, frac]
    else:
        offsets = [-1, 0, 1, 2]
        weights = [keys_kernel(frac - o) for o in offsets]
    index = torch.stack([(base + o).clamp(0, n - 1).long() for o in offsets])
    return index, torch.stack(weights).to(dtype)


def origin_aligned_upsample(
    x: torch.Tensor, scale: Sequence[int], mode: Mode = "cubic"
) -> torch.Tensor:
    """Upsample ``x`` (B, C, *S) by an integer ``scale`` per spatial axis.

    Returns (B, C, *(S * scale)); HR voxel ``i`` takes the interpolated LR value at
    ``i / s`` (origin-aligned). Differentiable in ``x``; exact copy where ``s = 1``.
    """
    nd = len(scale)
    if x.ndim != nd + 2:
        raise InputError(
            f"interpolation: input shape {tuple(x.shape)} does not have {nd} spatial axes"
        )
    if mode not in ("linear", "cubic"):
        raise InputError(f"interpolation: mode {mode!r} is not 'linear' or 'cubic'")
    out = x
    for k, s in enumerate(scale):
        if s == 1:
            continue
        axis = 2 + k
        index, weight = _taps(out.shape[axis], s, mode, out.dtype, out.device)
        shape = [1] * out.ndim
        shape[axis] = -1
        acc = None
        for t in range(index.shape[0]):
            term = out.index_select(axis, index[t]) * weight[t].reshape(shape)
            acc = term if acc is None else acc + term
        out = acc
    return out
