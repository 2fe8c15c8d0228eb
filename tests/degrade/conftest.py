"""Fixtures of the degradation tests: a non-trivial HR affine and the phantom factory."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from degrade_phantoms import SHAPE, blob, ellipsoid


@pytest.fixture
def hr_affine() -> np.ndarray:
    """A non-trivial voxel-to-world affine: rotation, offset and unequal voxel sizes."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    out = np.eye(4)
    out[:3, :3] = rz @ ry @ np.diag([0.9, 1.1, 1.3])
    out[:3, 3] = [-41.5, 17.25, 8.0]
    return out


@pytest.fixture
def phantom() -> Callable[..., np.ndarray]:
    """``phantom(shape=SHAPE, with_blob=True)``: ellipsoid (+ blob) float32 volume."""

    def make(shape: tuple[int, ...] = SHAPE, with_blob: bool = True) -> np.ndarray:
        out = ellipsoid(shape)
        if with_blob:
            out = out + blob(shape)
        return out

    return make
