"""The LR affine is exact: resampling the LR volume back BY ITS AFFINE lands on the HR anatomy.

For every operator and scale, LR data are evaluated at HR voxel coordinates through
``inv(A_lr) @ A_hr`` (trilinear, clamped edges; the HR affine has a rotation, an offset and
unequal voxel sizes). The bright blob's centroid, measured in a box of HR coordinates
centred on its known position, must come back to that position to a small fraction of an
HR voxel, and the whole resampled volume must correlate with the HR one. A negative control
shows the check is sensitive: the common centre-aligned affine (origin moved by ``(s-1)/2``
HR voxels) misplaces the blob by 0.4-1.4 voxels.
"""

from __future__ import annotations

import numpy as np
import pytest
from degrade_phantoms import BLOB_CENTRE, SHAPE
from scipy import ndimage

from crfm_bench.data.volume import Volume
from crfm_bench.degrade import Degradation, ImageDegradation, KSpaceDegradation
from crfm_bench.scale import format_scale

OPERATORS = [
    KSpaceDegradation(2),
    KSpaceDegradation(4),
    KSpaceDegradation((1, 1, 4)),
    ImageDegradation(2),
    ImageDegradation(4),
    ImageDegradation((1, 1, 4)),
    ImageDegradation(2, blur="slice_profile"),
    ImageDegradation(4, blur="slice_profile"),
    ImageDegradation((1, 1, 4), blur="slice_profile"),
]
TOLERANCE = 0.06  # HR voxels


def op_id(op: Degradation) -> str:
    return f"{op.domain}-{format_scale(op.scale)}-{getattr(op, 'blur', 'band')}"


def sample_by_affine(
    lr: np.ndarray, lr_affine: np.ndarray, hr_affine: np.ndarray, hr_coords: np.ndarray
) -> np.ndarray:
    """LR data at HR voxel coordinates ``hr_coords`` (3, P), located through the affines."""
    vox_to_vox = np.linalg.inv(lr_affine) @ hr_affine
    coords = vox_to_vox[:3, :3] @ hr_coords + vox_to_vox[:3, 3:4]
    return ndimage.map_coordinates(lr, coords, order=1, mode="nearest")


def blob_offset(lr: np.ndarray, lr_affine: np.ndarray, hr_affine: np.ndarray) -> np.ndarray:
    """Centroid of the resampled blob minus its true HR position (HR voxels, per axis).

    Measured on a box of +-7 HR voxels (step 0.5) centred on the true position, so a blob
    in the right place gives 0 whatever its width after blurring.
    """
    offsets = np.arange(-7.0, 7.0 + 1e-9, 0.5)
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij")).reshape(3, -1)
    values = sample_by_affine(lr, lr_affine, hr_affine, grid + np.array(BLOB_CENTRE)[:, None])
    weights = np.clip(values, 0, None)
    return (grid * weights).sum(axis=1) / weights.sum()


def degraded_blob(op: Degradation, phantom, hr_affine: np.ndarray) -> tuple[np.ndarray, Volume]:
    """LR of (ellipsoid + blob) minus LR of the ellipsoid alone, and the former LR volume."""
    with_blob = op.apply(Volume(phantom(), hr_affine), np.random.default_rng(0))
    without = op.apply(Volume(phantom(with_blob=False), hr_affine), np.random.default_rng(0))
    np.testing.assert_array_equal(with_blob.affine, without.affine)
    return with_blob.data - without.data, with_blob


@pytest.mark.parametrize("op", OPERATORS, ids=op_id)
def test_resampled_lr_lands_on_hr_anatomy(op: Degradation, phantom, hr_affine) -> None:
    blob_lr, lr = degraded_blob(op, phantom, hr_affine)
    assert lr.data.shape == op.lr_shape(SHAPE)
    assert np.all(np.abs(blob_offset(blob_lr, lr.affine, hr_affine)) < TOLERANCE)

    hr_coords = np.indices(SHAPE, dtype=np.float64).reshape(3, -1)
    back = sample_by_affine(lr.data, lr.affine, hr_affine, hr_coords)
    assert np.corrcoef(back, phantom().ravel())[0, 1] > 0.95


@pytest.mark.parametrize("op", OPERATORS, ids=op_id)
def test_centre_aligned_affine_misplaces_the_blob(op: Degradation, phantom, hr_affine) -> None:
    """Negative control: the same data with its origin moved by (s-1)/2 HR voxels fail."""
    blob_lr, lr = degraded_blob(op, phantom, hr_affine)
    s = np.asarray(op.scale, dtype=np.float64)
    wrong = lr.affine.copy()
    wrong[:3, 3] = hr_affine[:3, :3] @ ((s - 1) / 2) + hr_affine[:3, 3]
    offset = blob_offset(blob_lr, wrong, hr_affine)
    assert np.all(np.abs(offset[s > 1]) > 0.4)
    assert np.all(np.abs(offset[s == 1]) < TOLERANCE)
