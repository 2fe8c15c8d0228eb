r"""The degradation contract: ``apply(volume, rng) -> Volume`` with an exact LR affine.

Every operator is *origin-aligned* (the project-wide sampling convention): LR voxel ``m``
along an axis degraded by the integer factor ``s`` is the HR signal, low-pass filtered,
at HR voxel coordinate ``m * s``. Voxel 0 of LR and HR therefore sit at the same world
point and the LR affine is

.. math:: A_{lr} = A_{hr} \, \mathrm{diag}(s_x, s_y, s_z, 1).

(k-space truncation of a length ``N`` not divisible by ``s`` keeps ``M = round(N/s)``
samples, so its zoom is ``N/M`` instead of ``s``:
:func:`crfm_bench.degrade.kspace.kspace_lr_affine`.)

Randomness (noise) comes only from the ``numpy.random.Generator`` passed to ``apply``;
the stage derives it from an explicit per-volume seed, so an operator object itself holds
no state and is safe to ship to Ray workers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from crfm_bench.data.volume import Volume
from crfm_bench.scale import Scale

SAMPLING = "origin-aligned: LR voxel m = HR voxel m*s; A_lr = A_hr @ diag(s, 1)"


def decimated_affine(hr_affine: np.ndarray, scale: Sequence[float]) -> np.ndarray:
    """LR affine of an origin-aligned decimation: ``A_hr @ diag(*scale, 1)`` (same origin).

    ``hr_affine``: 4x4 voxel-to-world (mm). ``scale``: zoom per array axis (HR voxels per
    LR voxel). Returns a new float64 4x4 matrix.
    """
    zoom = np.ones(4, dtype=np.float64)
    zoom[:3] = np.asarray(scale, dtype=np.float64)
    return np.asarray(hr_affine, dtype=np.float64) @ np.diag(zoom)


class Degradation(ABC):
    """An LR-from-HR operator. Subclasses are frozen dataclasses with a ``scale`` field."""

    domain: ClassVar[str]
    scale: Scale

    @abstractmethod
    def apply(self, volume: Volume, rng: np.random.Generator) -> Volume:
        """LR volume (float32 data (X', Y', Z'), exact LR affine) from HR ``volume``."""

    @abstractmethod
    def lr_shape(self, hr_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the LR grid for an HR grid of ``hr_shape``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Every parameter of the operator (JSON-serialisable; recorded in the manifest)."""
