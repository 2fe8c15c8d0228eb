"""Deterministic synthetic volumes for the metric tests.

Built from closed-form functions only (no random generator), so the arrays are the same on
every machine and numpy version, which the pinned golden values rely on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SHAPE = (26, 24, 22)


def grid(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """(3, X, Y, Z) voxel coordinates scaled to [-1, 1] per axis."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def head(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Boolean ellipsoid "head" (X, Y, Z), semi-axes 0.8 of each half-extent."""
    g = grid(shape)
    return (g**2).sum(axis=0) < 0.8**2


def hole(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Boolean small ellipsoid inside :func:`head` (a dark "ventricle")."""
    g = grid(shape)
    return ((g[0] - 0.1) ** 2 + g[1] ** 2 + (g[2] / 0.8) ** 2) < 0.25**2


def phantom_hr(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """HR volume in scanner-like units: textured head (430..1170), a dark hole (30) inside it,
    and a positive noise-like floor (10..30) outside it that reaches the volume's border."""
    g = grid(shape)
    texture = 800.0 + 250.0 * np.sin(3.0 * g[0]) * np.cos(2.0 * g[1]) + 120.0 * np.cos(5.0 * g[2])
    floor = 20.0 + 10.0 * np.cos(9.0 * g[0] + 5.0 * g[1] + 7.0 * g[2])
    hr = np.where(head(shape), texture, floor)
    return np.where(hole(shape), 30.0, hr)


def phantom_sr(hr: np.ndarray) -> np.ndarray:
    """A plausible prediction of ``hr``: blurred, 2 % too bright, a smooth ripple in the head."""
    g = grid(hr.shape)
    ripple = 40.0 * np.sin(7.0 * g[0] + 3.0 * g[1]) * np.cos(4.0 * g[2])
    return ndimage.gaussian_filter(hr, 0.8) * 1.02 + ripple * head(hr.shape)
