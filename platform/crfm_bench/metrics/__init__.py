"""The metric contract of crfm-bench (``METRICS.md``): how every PSNR and SSIM is computed.

* :func:`foreground_mask` - the subject's brain mask from its HR volume;
* :func:`normalise_pair` - divide both volumes by the HR foreground 99.5th percentile, clip;
* :func:`evaluate_volume` - ``psnr``, ``ssim`` (primary, 3D, per volume) and ``psnr_masked``,
  ``ssim_masked``, ``ssim_slice``, ``nmse`` (secondary) of one prediction;
* :func:`metric_spec` / :func:`metric_spec_hash` - the contract as a record and its hash;
* :func:`summarise` - mean, std and n per model over subjects.

torch and torchmetrics are imported only when a metric is computed, so the spec and its hash
are cheap to obtain.
"""

from crfm_bench.metrics.mask import foreground_mask
from crfm_bench.metrics.normalise import normalise_pair
from crfm_bench.metrics.spec import (
    CONTRACT_VERSION,
    METRIC_NAMES,
    MIN_AXIS_LENGTH,
    metric_spec,
    metric_spec_hash,
)
from crfm_bench.metrics.summary import summarise
from crfm_bench.metrics.volume import evaluate_volume

__all__ = [
    "CONTRACT_VERSION",
    "METRIC_NAMES",
    "MIN_AXIS_LENGTH",
    "evaluate_volume",
    "foreground_mask",
    "metric_spec",
    "metric_spec_hash",
    "normalise_pair",
    "summarise",
]
