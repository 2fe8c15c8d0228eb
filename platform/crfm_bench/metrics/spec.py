"""The metric contract as data: every constant the metrics use, its record and its hash.

Published MRI super-resolution numbers are hard to compare because PSNR and SSIM are
computed in many ways (intensity scaling, data range, window, padding, masking, 2D or 3D).
This module is the single source of the constants :mod:`crfm_bench.metrics` uses.
:func:`metric_spec` writes them down as a JSON-able dict that every evaluation records
(MLflow tags), and :func:`metric_spec_hash` gives its 12-hex-digit digest: the leaderboard
only ranks runs whose hashes are equal. Change a constant here -> the hash changes;
change a convention in the code -> bump :data:`CONTRACT_VERSION` so the hash changes too.

SSIM: Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), 2004 (Gaussian window sigma 1.5, K1 0.01, K2 0.03).
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from crfm_bench.errors import InputError

#: Bump when a convention changes that the fields below do not capture.
CONTRACT_VERSION = "crfm-metrics/1"

#: Keys of :func:`crfm_bench.metrics.evaluate_volume`'s result, in report order.
METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "psnr_masked", "ssim_masked", "ssim_slice", "nmse")

# Intensity normalisation: divide both volumes by this percentile of the HR foreground.
NORM_PERCENTILE = 99.5
CLIP_RANGE = (0.0, 1.0)
DATA_RANGE = 1.0

# SSIM (Wang et al. 2004): Gaussian window, torchmetrics' kernel size int(3.5*sigma+0.5)*2+1.
SSIM_SIGMA = 1.5
SSIM_KERNEL_SIZE = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Smallest axis length evaluated: the 11-voxel window must fit inside the volume.
MIN_AXIS_LENGTH = SSIM_KERNEL_SIZE

# Foreground (brain) mask rule, see crfm_bench.metrics.mask.foreground_mask.
MASK_REF_PERCENTILE = 99.0
MASK_FRACTION = 0.1
MASK_CONNECTIVITY = 1  # scipy.ndimage.generate_binary_structure(3, 1): face neighbours

DEFAULT_SLICE_AXIS = 2


def check_slice_axis(slice_axis: object) -> int:
    """Return ``slice_axis`` if it is 0, 1 or 2 (an axis of an (X, Y, Z) volume)."""
    if isinstance(slice_axis, bool) or slice_axis not in (0, 1, 2):
        raise InputError(f"slice_axis: {slice_axis!r} must be 0, 1 or 2 (an axis of (X, Y, Z))")
    return int(slice_axis)  # type: ignore[call-overload]


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover - torchmetrics is a hard dependency
        return "not installed"


def metric_spec(slice_axis: int = DEFAULT_SLICE_AXIS) -> dict[str, Any]:
    """The metric contract as a JSON-able dict (nested; plain str/float/int/bool/list values).

    ``slice_axis`` is the axis of (X, Y, Z) along which ``ssim_slice`` takes 2D slices (the
    acquisition axis); it is part of the contract, so it is part of the record and the hash.
    """
    slice_axis = check_slice_axis(slice_axis)
    return {
        "contract": CONTRACT_VERSION,
        "grid": "hr",
        "per_volume": True,
        "normalisation": {
            "method": "divide_by_hr_foreground_percentile",
            "percentile": NORM_PERCENTILE,
            "percentile_interpolation": "numpy.percentile linear",
            "same_divisor_for_prediction": True,
            "clip": list(CLIP_RANGE),
        },
        "data_range": DATA_RANGE,
        "psnr": {
            "implementation": "torchmetrics.functional.image.peak_signal_noise_ratio",
            "mse": "whole volume, not pooled over a batch",
            "dtype": "float64",
            "identical_volumes": "inf",
        },
        "ssim": {
            "implementation": "torchmetrics.functional.image.structural_similarity_index_measure",
            "dims": 3,
            "tensor_layout": "N,C,D,H,W",
            "gaussian_kernel": True,
            "sigma": SSIM_SIGMA,
            "kernel_size": SSIM_KERNEL_SIZE,
            "k1": SSIM_K1,
            "k2": SSIM_K2,
            "padding": "reflect",
            "reduction": "mean of the full map (float64 accumulation)",
            "dtype": "float32",
            "min_axis_length": MIN_AXIS_LENGTH,
        },
        "mask": {
            "rule": (
                "hr > fraction * percentile(hr[hr > 0]); largest connected component; "
                "3D holes filled"
            ),
            "percentile": MASK_REF_PERCENTILE,
            "fraction": MASK_FRACTION,
            "connectivity": MASK_CONNECTIVITY,
        },
        "secondary": {
            "psnr_masked": "PSNR of the boolean-indexed foreground voxels",
            "ssim_masked": "mean of the 3D SSIM map inside the mask",
            "ssim_slice": "2D SSIM per slice along slice_axis, mean over slices with foreground",
            "nmse": "sum((sr-hr)^2) / sum(hr^2) on the normalised volumes",
        },
        "slice_axis": slice_axis,
        "torchmetrics_version": _package_version("torchmetrics"),
    }


def canonical_json(spec: dict[str, Any]) -> str:
    """The canonical JSON text of ``spec``: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(
        spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def metric_spec_hash(spec: dict[str, Any] | None = None) -> str:
    """First 12 hex digits of the SHA-256 of :func:`canonical_json` of ``spec``.

    ``spec`` defaults to :func:`metric_spec` (). Stable across processes and machines for the
    same spec (no use of Python's salted ``hash``).
    """
    if spec is None:
        spec = metric_spec()
    return hashlib.sha256(canonical_json(spec).encode("ascii")).hexdigest()[:12]
