r"""PSNR, SSIM and their secondaries for one predicted volume against its HR volume.

The contract (``METRICS.md``; constants in :mod:`crfm_bench.metrics.spec`):

* Both volumes are on the HR grid, normalised by :func:`~crfm_bench.metrics.normalise_pair`
  (HR foreground 99.5th percentile, same divisor for the prediction, clipped to [0, 1]).
* ``psnr = 10 log10(1 / MSE)`` with ``data_range = 1.0`` passed explicitly and the MSE over
  the whole volume of this subject (torchmetrics, float64, never pooled over a batch).
  Identical volumes give ``inf`` (no cap).
* ``ssim``: torchmetrics' 3D SSIM on a (1, 1, X, Y, Z) tensor, Gaussian window sigma 1.5
  (11 voxels), K1 = 0.01, K2 = 0.03, ``data_range = 1.0``, reflect padding, so the SSIM map
  has the volume's shape; the score is the mean of the whole map (Wang et al., IEEE TIP
  2004). SSIM is computed in float32, because torch's float64 3D convolution on the CPU
  unfolds the input (about 10 GB for a 100^3 volume with an 11^3 kernel) and is far slower;
  the map's mean is accumulated in float64. Against a float64 computation of the same
  convention the volume means agree to a few 1e-6 (measured up to 2.4e-6 on the ICBM 2009a
  T1 template); single voxels of flat, non-zero regions may be off by up to ~3e-3, because
  SSIM's C2 = 9e-4 magnifies float32 rounding of the local variances (zeros are exact).
* ``psnr_masked``: PSNR of the boolean-indexed foreground voxels (not zero-filled).
* ``ssim_masked``: mean of the 3D SSIM map over the foreground voxels.
* ``ssim_slice``: torchmetrics' 2D SSIM (same settings) of each slice along ``slice_axis``,
  averaged over the slices that contain foreground.
* ``nmse = sum((sr - hr)^2) / sum(hr^2)`` on the normalised volumes.

Every axis must have at least :data:`~crfm_bench.metrics.spec.MIN_AXIS_LENGTH` (11) voxels,
so that the SSIM window fits inside the volume.
"""

from __future__ import annotations

import numpy as np

from crfm_bench.errors import InputError
from crfm_bench.metrics.mask import foreground_mask
from crfm_bench.metrics.normalise import normalise_pair
from crfm_bench.metrics.spec import (
    DATA_RANGE,
    MIN_AXIS_LENGTH,
    SSIM_K1,
    SSIM_K2,
    SSIM_KERNEL_SIZE,
    SSIM_SIGMA,
    check_slice_axis,
)


def _check_volume(x: object, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise InputError(f"{what}: expected a 3D volume (X, Y, Z), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"{what}: expected real numbers, got dtype {x.dtype}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise InputError(f"{what}: {int(bad.sum())} voxels are NaN or Inf")
    return x.astype(np.float64, copy=False)


def psnr(sr_n: np.ndarray, hr_n: np.ndarray) -> float:
    """PSNR in dB of normalised arrays of equal shape, ``data_range = 1.0``, MSE over all voxels.

    Works on any shape (a volume or boolean-indexed voxels); ``inf`` if they are identical.
    """
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio

    pred = torch.from_numpy(np.ascontiguousarray(sr_n, dtype=np.float64)).reshape(1, -1)
    target = torch.from_numpy(np.ascontiguousarray(hr_n, dtype=np.float64)).reshape(1, -1)
    value = peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE, reduction="none", dim=1)
    return float(value[0])


def _ssim_maps(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """torchmetrics SSIM maps of a batch (N, *S) with len(S) in (2, 3); returns (N, *S) float32."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32)).unsqueeze(1)
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)).unsqueeze(1)
    with torch.no_grad():
        _, full = structural_similarity_index_measure(
            p,
            t,
            gaussian_kernel=True,
            sigma=SSIM_SIGMA,
            kernel_size=SSIM_KERNEL_SIZE,
            reduction="none",
            data_range=DATA_RANGE,
            k1=SSIM_K1,
            k2=SSIM_K2,
            return_full_image=True,
        )
    full = full[:, 0].numpy()
    if full.shape != pred.shape:  # torchmetrics < 1.5 cropped the map: a different convention
        raise RuntimeError(f"torchmetrics SSIM map has shape {full.shape}, expected {pred.shape}")
    return full


def ssim_map(sr_n: np.ndarray, hr_n: np.ndarray) -> np.ndarray:
    """3D SSIM map (X, Y, Z) float32 of normalised volumes (X, Y, Z) (torchmetrics, see above)."""
    return _ssim_maps(sr_n[None], hr_n[None])[0]


def ssim_slices(sr_n: np.ndarray, hr_n: np.ndarray, slice_axis: int) -> np.ndarray:
    """2D SSIM (float64, one per slice) of each slice along ``slice_axis`` of (X, Y, Z) volumes."""
    slice_axis = check_slice_axis(slice_axis)
    maps = _ssim_maps(np.moveaxis(sr_n, slice_axis, 0), np.moveaxis(hr_n, slice_axis, 0))
    return maps.reshape(maps.shape[0], -1).mean(axis=1, dtype=np.float64)


def evaluate_volume(
    sr: np.ndarray,
    hr: np.ndarray,
    mask: np.ndarray | None = None,
    slice_axis: int = 2,
    *,
    what: str = "prediction",
) -> dict[str, float]:
    """All contract metrics of a prediction ``sr`` against ``hr``, both (X, Y, Z) on the HR grid.

    ``mask``: boolean (X, Y, Z) foreground; default :func:`~crfm_bench.metrics.foreground_mask`
    of ``hr``. ``slice_axis``: the acquisition axis for ``ssim_slice``. ``what`` names the
    prediction in error messages (e.g. its file). Returns floats keyed by
    :data:`~crfm_bench.metrics.spec.METRIC_NAMES`: ``psnr`` (dB), ``ssim``, ``psnr_masked``
    (dB), ``ssim_masked``, ``ssim_slice``, ``nmse``.

    Raises InputError if the shapes differ (naming both), a volume is not 3D or has NaN/Inf
    voxels, an axis is shorter than 11 voxels, or the mask is empty or of another shape.
    """
    slice_axis = check_slice_axis(slice_axis)
    sr_arr = np.asarray(sr)
    hr_arr = np.asarray(hr)
    if sr_arr.shape != hr_arr.shape:
        raise InputError(
            f"{what}: shape {sr_arr.shape} does not match the HR volume's shape {hr_arr.shape}"
        )
    sr_arr = _check_volume(sr_arr, what)
    hr_arr = _check_volume(hr_arr, "HR volume")
    if min(hr_arr.shape) < MIN_AXIS_LENGTH:
        raise InputError(
            f"{what}: shape {hr_arr.shape} is too small, every axis needs at least "
            f"{MIN_AXIS_LENGTH} voxels (the SSIM window)"
        )
    if mask is None:
        mask = foreground_mask(hr_arr)
    else:
        mask = np.asarray(mask)
        if mask.shape != hr_arr.shape:
            raise InputError(
                f"mask: shape {mask.shape} does not match the HR volume's shape {hr_arr.shape}"
            )
    sr_n, hr_n, _ = normalise_pair(sr_arr, hr_arr, mask)

    full = ssim_map(sr_n, hr_n)
    slice_values = ssim_slices(sr_n, hr_n, slice_axis)
    other_axes = tuple(a for a in range(3) if a != slice_axis)
    has_foreground = mask.any(axis=other_axes)
    hr_energy = float(np.sum(hr_n * hr_n))
    return {
        "psnr": psnr(sr_n, hr_n),
        "ssim": float(full.mean(dtype=np.float64)),
        "psnr_masked": psnr(sr_n[mask], hr_n[mask]),
        "ssim_masked": float(full[mask].mean(dtype=np.float64)),
        "ssim_slice": float(slice_values[has_foreground].mean()),
        "nmse": float(np.sum((sr_n - hr_n) ** 2)) / hr_energy,
    }
