"""From ``params.yaml`` to an operator: :func:`build_operator` (one per (domain, scale))."""

from __future__ import annotations

from crfm_bench.config import DegradeConfig
from crfm_bench.degrade.base import Degradation
from crfm_bench.degrade.image import ImageDegradation
from crfm_bench.degrade.kspace import KSpaceDegradation
from crfm_bench.errors import InputError
from crfm_bench.scale import parse_scale

DOMAINS: tuple[str, ...] = ("kspace", "image")


def build_operator(domain: str, scale: object, cfg: DegradeConfig | None = None) -> Degradation:
    """The operator of ``domain`` (``kspace`` or ``image``) at ``scale`` with ``cfg``'s knobs.

    ``scale``: anything :func:`crfm_bench.scale.parse_scale` accepts (``2``, ``"1x1x4"``,
    ``(1, 1, 4)``). ``cfg`` defaults to ``DegradeConfig()``. Raises InputError naming the
    option for an unknown domain or a bad scale.
    """
    cfg = cfg if cfg is not None else DegradeConfig()
    factors = parse_scale(scale, what="degrade scale")
    if domain == "kspace":
        k = cfg.kspace
        return KSpaceDegradation(factors, window=k.window, tukey_alpha=k.tukey_alpha, snr=k.snr)
    if domain == "image":
        i = cfg.image
        return ImageDegradation(factors, blur=i.blur, fwhm_factor=i.fwhm_factor)
    raise InputError(f"degrade domain: {domain!r} is not one of {', '.join(DOMAINS)}")
