r"""k-space truncation: the physics of a lower-resolution MRI acquisition.

An MRI scanner samples k-space; a lower resolution along an axis means a narrower band of
k-space along it. :func:`kspace_crop` keeps the centre ``M = round(N / s)`` coefficients of
the centred spectrum along each degraded axis and inverts on the smaller grid;
:func:`kspace_zero_fill` pads a spectrum back to ``N`` with zeros ("zero-filling
interpolation", the ideal band-limited interpolation for such data).

Conventions (used by the LR affine and by the ``zerofill`` model):

* FFTs use ``norm="forward"`` (the forward transform divides by the length), so the DC
  coefficient is the mean and intensities keep their scale across grid sizes.
* The kept band is ``[N//2 - M//2, N//2 - M//2 + M)`` of the ``fftshift``-ed spectrum.
* LR sample ``m`` is the band-limited interpolant at HR voxel coordinate ``m * N / M``:
  the LR affine is ``A_hr @ diag(N/M ..., 1)`` with the same origin
  (:func:`kspace_lr_affine`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from crfm_bench.errors import InputError


def lr_length(n: int, s: int) -> int:
    """Number of LR samples kept from ``n`` along an axis degraded by ``s``."""
    m = round(n / s)
    if m < 1:
        raise InputError(f"scale {s}: axis of length {n} is too short to degrade")
    return m


def _band(n: int, m: int) -> slice:
    start = n // 2 - m // 2
    return slice(start, start + m)


def kspace_crop(x: torch.Tensor, scale: Sequence[int]) -> torch.Tensor:
    """Complex LR image from real or complex ``x`` by keeping the centre of k-space.

    ``x``: (..., *S) with ``len(scale)`` trailing spatial axes. Returns a complex tensor
    (..., *M) with ``M_i = round(S_i / scale_i)``. Take ``.abs()`` for a magnitude image.
    """
    nd = len(scale)
    dims = tuple(range(-nd, 0))
    spatial = x.shape[-nd:]
    out_len = [lr_length(n, s) if s > 1 else n for n, s in zip(spatial, scale, strict=True)]
    k = torch.fft.fftshift(torch.fft.fftn(x, dim=dims, norm="forward"), dim=dims)
    index = (Ellipsis, *(_band(n, m) for n, m in zip(spatial, out_len, strict=True)))
    k = k[index]
    return torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims, norm="forward")


def kspace_zero_fill(x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """Complex image on the grid ``out_shape`` from ``x`` by zero-padding its centred spectrum.

    The exact inverse placement of :func:`kspace_crop`: for ``x`` whose spectrum lies inside
    the kept band, ``kspace_zero_fill(kspace_crop(x, s), x.shape)`` returns ``x``.
    """
    nd = len(out_shape)
    dims = tuple(range(-nd, 0))
    spatial = x.shape[-nd:]
    k = torch.fft.fftshift(torch.fft.fftn(x, dim=dims, norm="forward"), dim=dims)
    full = torch.zeros((*x.shape[:-nd], *out_shape), dtype=k.dtype, device=k.device)
    index = (Ellipsis, *(_band(n, m) for n, m in zip(out_shape, spatial, strict=True)))
    full[index] = k
    return torch.fft.ifftn(torch.fft.ifftshift(full, dim=dims), dim=dims, norm="forward")


def kspace_lr_affine(
    hr_affine: np.ndarray, hr_shape: Sequence[int], lr_shape: Sequence[int]
) -> np.ndarray:
    """LR affine for :func:`kspace_crop`: voxel size times ``N/M``, same origin (voxel 0)."""
    zoom = np.array([n / m for n, m in zip(hr_shape, lr_shape, strict=True)], dtype=np.float64)
    out = np.array(hr_affine, dtype=np.float64, copy=True)
    out[:3, :3] = out[:3, :3] * zoom[None, :]
    return out
