"""Tiny synthetic HR volumes for the degradation tests (CPU, milliseconds each).

(A module with a unique name rather than ``conftest``, so tests can import it safely
whatever other ``conftest.py`` files the suite holds.)

The phantom is a smooth ellipsoid (intensity 0.5, soft edge) plus a bright Gaussian blob at
a known, off-centre, non-grid-aligned voxel position, so where the blob lands after a
degradation and a resampling by the affines is known in advance.
"""

from __future__ import annotations

import numpy as np

SHAPE = (32, 28, 24)
BLOB_CENTRE = (18.6, 11.3, 10.4)  # HR voxel coordinates: off-centre, not on any LR sample
BLOB_SIGMA = 2.5  # voxels


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")


def ellipsoid(shape: tuple[int, ...], value: float = 0.5, edge: float = 1.0) -> np.ndarray:
    """Soft-edged ellipsoid filling ~70% of the box (edge width ``edge`` voxels)."""
    grid = _grid(shape)
    c = [(n - 1) / 2 for n in shape]
    semi = [0.36 * n for n in shape]
    r = np.sqrt(sum(((g - ci) / a) ** 2 for g, ci, a in zip(grid, c, semi, strict=True)))
    dist = (r - 1.0) * min(semi)  # ~ signed distance to the surface in voxels
    return (value / (1.0 + np.exp(dist / edge))).astype(np.float32)


def blob(shape: tuple[int, ...], centre=BLOB_CENTRE, sigma=BLOB_SIGMA) -> np.ndarray:
    grid = _grid(shape)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)
