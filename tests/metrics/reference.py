"""Independent float64 numpy/scipy implementations of the contract, for cross-checks.

Written from the formulas (Wang et al., IEEE TIP 2004; METRICS.md), not from the library:
the constants are typed here on purpose instead of imported from ``crfm_bench.metrics``.
torchmetrics' SSIM convention (>= 1.5): separable Gaussian window sigma 1.5 truncated to
11 taps, normalised to sum 1; reflect padding without repeating the edge voxel (scipy's
``mode="mirror"``, torch's ``mode="reflect"``); variances clamped at 0; the full map, of
the input's shape, averaged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

C1 = (0.01 * 1.0) ** 2
C2 = (0.03 * 1.0) ** 2


def normalise(sr: np.ndarray, hr: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide both by the HR foreground 99.5th percentile, clip to [0, 1]."""
    d = np.percentile(hr[mask], 99.5)
    return np.clip(sr / d, 0.0, 1.0), np.clip(hr / d, 0.0, 1.0)


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """10 log10(1 / MSE) for data range 1."""
    return float(10.0 * np.log10(1.0 / np.mean((x - y) ** 2)))


def ssim_map(x: np.ndarray, y: np.ndarray, axes: tuple[int, ...] | None = None) -> np.ndarray:
    """SSIM map of float64 arrays, Gaussian-filtered over ``axes`` (default: all)."""

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=1.5, mode="mirror", radius=5, axes=axes)

    mx, my = blur(x), blur(y)
    sxx = np.maximum(blur(x * x) - mx * mx, 0.0)
    syy = np.maximum(blur(y * y) - my * my, 0.0)
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2))


def ssim_per_slice(x: np.ndarray, y: np.ndarray, slice_axis: int) -> np.ndarray:
    """Mean 2D SSIM of each slice along ``slice_axis`` (1D array)."""
    in_plane = tuple(a for a in range(3) if a != slice_axis)
    return ssim_map(x, y, axes=in_plane).mean(axis=in_plane)
