"""NIfTI volume I/O with validation (nibabel).

Every volume that enters crfm-bench goes through :func:`load_volume`, which rejects what a
later step would silently mishandle: unreadable or truncated files, 4D data, zero-size
dimensions, NaN/Inf voxels, all-zero images and non-invertible affines. Every volume that
leaves goes through :func:`save_volume`, which writes float32 with the affine as both
qform and sform, atomically.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

from crfm_bench.atomic import atomic_path
from crfm_bench.errors import InputError, MissingInputError


class Volume(NamedTuple):
    """A 3D image: ``data`` (X, Y, Z) float32 in voxel order and its 4x4 voxel-to-RAS ``affine`` (mm)."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def check_affine(affine: np.ndarray, where: str) -> np.ndarray:
    """Return ``affine`` as float64 4x4 if it is finite and invertible; raise InputError if not."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"{where}: affine is not a finite 4x4 matrix")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{where}: affine is not invertible (zero voxel size or degenerate axes)")
    return affine


def check_data(data: np.ndarray, where: str) -> np.ndarray:
    """Return ``data`` as float32 if it is a non-empty, finite, non-constant-zero 3D array."""
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{where}: expected a 3D volume, got {data.ndim}D with shape {data.shape}")
    if min(data.shape) == 0:
        raise InputError(f"{where}: a dimension has size zero (shape {data.shape})")
    data = data.astype(np.float32, copy=False)
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(f"{where}: {int(bad.sum())} voxels are NaN or Inf")
    if not np.any(data):
        raise InputError(f"{where}: the volume is empty (all voxels are zero)")
    return data


def load_volume(path: str | Path) -> Volume:
    """Read and validate a 3D NIfTI file (``.nii`` or ``.nii.gz``).

    Raises :class:`MissingInputError` if the file does not exist and :class:`InputError`
    (naming the file) if it is corrupt, truncated, not 3D, has a zero-size dimension,
    NaN/Inf or all-zero voxels, or a non-invertible affine.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if img.shape and min(img.shape) == 0:
            raise InputError(f"{path}: a dimension has size zero (shape {tuple(img.shape)})")
        data = np.asarray(img.dataobj)
        affine = img.affine
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
        nib.filebasedimages.ImageFileError,
    ) as exc:
        raise InputError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})"
        ) from None
    if affine is None:
        raise InputError(f"{path}: no affine in header")
    return Volume(check_data(data, str(path)), check_affine(affine, str(path)))


def save_volume(path: str | Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` as float32 NIfTI with ``affine`` as qform and sform (code 1, scanner), atomically."""
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
