"""The foreground (brain) mask of one subject, from its HR volume alone.

The rule is dataset-independent and needs no atlas or model, so every run computes the
same mask for the same HR volume (it is recorded in :func:`~crfm_bench.metrics.metric_spec`):

1. ``t = MASK_FRACTION * percentile(hr[hr > 0], MASK_REF_PERCENTILE)`` (0.1 x the 99th
   percentile of the positive voxels: robust to a few hot voxels, and far above the noise
   floor of a magnitude image or the zeros of a skull-stripped one);
2. keep ``hr > t``;
3. keep the largest connected component (face connectivity), which drops isolated noise
   and ghosting specks outside the head;
4. fill its enclosed 3D holes (dark ventricles, necrotic cores), which belong to the brain.

For skull-stripped data (BraTS) this is the stripped brain; for unstripped data (IXI) it is
the head.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from crfm_bench.errors import InputError
from crfm_bench.metrics.spec import MASK_CONNECTIVITY, MASK_FRACTION, MASK_REF_PERCENTILE


def foreground_mask(hr: np.ndarray) -> np.ndarray:
    """Boolean (X, Y, Z) foreground mask of the HR volume ``hr`` (X, Y, Z), by the rule above.

    Raises InputError if ``hr`` is not 3D, has NaN/Inf voxels or no positive voxel.
    """
    hr = np.asarray(hr)
    if hr.ndim != 3:
        raise InputError(f"HR volume: expected 3D (X, Y, Z), got shape {hr.shape}")
    hr = hr.astype(np.float64, copy=False)
    bad = ~np.isfinite(hr)
    if bad.any():
        raise InputError(f"HR volume: {int(bad.sum())} voxels are NaN or Inf")
    positive = hr[hr > 0]
    if positive.size == 0:
        raise InputError("HR volume: no positive voxel, cannot define a foreground mask")
    threshold = MASK_FRACTION * np.percentile(positive, MASK_REF_PERCENTILE)
    above = hr > threshold
    structure = ndimage.generate_binary_structure(3, MASK_CONNECTIVITY)
    labels, n = ndimage.label(above, structure=structure)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0  # background
        above = labels == int(np.argmax(sizes))  # ties: the lowest label (first in C order)
    return ndimage.binary_fill_holes(above)
