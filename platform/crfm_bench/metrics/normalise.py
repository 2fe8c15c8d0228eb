"""Intensity normalisation of a (prediction, HR) pair before any metric is computed.

MRI intensities have no physical unit, so PSNR and SSIM need a fixed scale. crfm-bench
divides the HR volume by the 99.5th percentile of its foreground (robust to a few bright
voxels, unlike the maximum), divides the prediction by the *same* number (so a prediction
cannot improve its score by rescaling itself), and clips both to [0, 1]; the data range is
then 1.0 by construction.
"""

from __future__ import annotations

import numpy as np

from crfm_bench.errors import InputError
from crfm_bench.metrics.spec import CLIP_RANGE, NORM_PERCENTILE


def normalise_pair(
    sr: np.ndarray, hr: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Return ``(sr_n, hr_n, divisor)`` with ``x_n = clip(x / divisor, 0, 1)`` as float64.

    ``sr``, ``hr``: (X, Y, Z) on the same grid; ``mask``: boolean (X, Y, Z) foreground of
    ``hr``. ``divisor = numpy.percentile(hr[mask], 99.5)`` (linear interpolation), in the
    units of ``hr``. Raises InputError if the mask is empty or the divisor is not positive.
    """
    hr = np.asarray(hr, dtype=np.float64)
    sr = np.asarray(sr, dtype=np.float64)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise InputError(f"mask: expected a boolean array, got dtype {mask.dtype}")
    if mask.shape != hr.shape or sr.shape != hr.shape:
        raise InputError(f"shapes differ: prediction {sr.shape}, HR {hr.shape}, mask {mask.shape}")
    if not mask.any():
        raise InputError("mask: the foreground mask is empty")
    divisor = float(np.percentile(hr[mask], NORM_PERCENTILE))
    if not np.isfinite(divisor) or divisor <= 0:
        raise InputError(
            f"HR volume: foreground {NORM_PERCENTILE}th percentile is {divisor}, must be > 0"
        )
    lo, hi = CLIP_RANGE
    return np.clip(sr / divisor, lo, hi), np.clip(hr / divisor, lo, hi), divisor
