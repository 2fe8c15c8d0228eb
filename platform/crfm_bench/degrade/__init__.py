"""LR from HR: k-space and image-domain degradations with exact LR affines (DATA.md).

* :mod:`~crfm_bench.degrade.base`: the operator contract and the origin-aligned LR affine;
* :mod:`~crfm_bench.degrade.kspace`: k-space truncation (+ window, noise, zero-fill);
* :mod:`~crfm_bench.degrade.image`: Gaussian or slice-profile blur, then ``[::s]``;
* :mod:`~crfm_bench.degrade.build`: :func:`build_operator` from ``params.degrade``;
* :mod:`~crfm_bench.degrade.stage`: the ``degrade`` stage over the HR manifest.
"""

from crfm_bench.degrade.base import Degradation, decimated_affine
from crfm_bench.degrade.build import DOMAINS, build_operator
from crfm_bench.degrade.image import ImageDegradation
from crfm_bench.degrade.kspace import KSpaceDegradation

__all__ = [
    "DOMAINS",
    "Degradation",
    "ImageDegradation",
    "KSpaceDegradation",
    "build_operator",
    "decimated_affine",
]
