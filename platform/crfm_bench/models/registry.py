"""The model registry: named variants, each one factory function (the timm habit).

A variant is registered with :func:`register_model` on a factory
``fn(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides) -> SRModel``::

    @register_model("edsr", family="edsr", needs_reference=False, trainable=True,
                    description="...", citation="Lim et al., CVPR-W 2017")
    def edsr(spatial_dims, scale, size, **overrides): ...

Families declare their size presets as plain dicts and resolve user overrides with
:func:`resolve_options`, so an unknown or ill-typed key fails with one line naming it. Sizes
(:data:`SIZES`, CRFM.md "Sizes of the baselines"):

* ``"tiny"`` (trains in minutes on 2 CPU cores) and ``"base"`` (GPU scale) are
  *capacity-matched*: every learned model lies within +-10 % of crfm's parameter count of the
  same size in the default setting (3D, x2; also 3D 1x1x4), so "which architecture is better"
  is asked at equal capacity;
* ``"paper"`` is the configuration its authors published (EDSR-baseline 16x64, RCAN 10x20x64,
  MINet as released). A family without a published configuration of its own (crfm and its
  ablations, edsr-fmp, the training-free ones) has no ``paper`` preset, and ``paper`` falls
  back to its ``base`` preset (:func:`resolve_options`, documented per model by
  :func:`model_card`'s ``preset`` field).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from crfm_bench.errors import InputError
from crfm_bench.models.base import SRModel
from crfm_bench.models.conv import check_spatial_dims
from crfm_bench.scale import parse_scale

SIZES = ("tiny", "base", "paper")

#: A family without a ``paper`` preset is built from this one for ``size="paper"``.
PAPER_FALLBACK = "base"

# The benchmark-wide global residual of every learned model (one default for all of them;
# ``residual`` is a common option: ``create_model("edsr", residual="none")``).
DEFAULT_RESIDUAL = "tricubic"

Factory = Callable[..., SRModel]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a variant, without building it."""

    name: str
    family: str
    needs_reference: bool
    trainable: bool
    description: str
    citation: str
    factory: Factory
    domains: tuple[str, ...] | None = None  # degradation domains it is meant for (None: all)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    needs_reference: bool,
    trainable: bool,
    description: str,
    citation: str,
    domains: tuple[str, ...] | None = None,
) -> Callable[[Factory], Factory]:
    """Decorator registering a factory under ``name`` (a name may be registered once).

    ``domains``: the degradation domains (``"kspace"``, ``"image"``) the model is a baseline
    for, e.g. ``("kspace",)`` for zero-filling; None (the default) for every domain.
    """

    def decorate(fn: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(
            name, family, needs_reference, trainable, description, citation, fn, domains
        )
        return fn

    return decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell pattern (``"crfm*"``)."""
    names = sorted(_REGISTRY)
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """Registration record of ``name``; InputError listing the known names if unknown."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(list_models())
        raise InputError(f"model {name!r}: unknown model; known: {known}") from None


def create_model(
    name: str, spatial_dims: int = 3, scale: object = 2, size: str = "tiny", **overrides: Any
) -> SRModel:
    """Build the variant ``name`` for ``spatial_dims`` (2 or 3) and an integer ``scale``.

    ``scale``: anything :func:`crfm_bench.scale.parse_scale` accepts (``2``, ``"1x1x4"``,
    ``(1, 1, 4)``). ``size``: one of :data:`SIZES` (``"paper"`` falls back to ``"base"`` for a
    family without a published configuration). ``overrides``: family options such as
    ``n_feats=32`` (InputError naming the key if unknown or of the wrong type), and for
    learned models ``residual`` (``"tricubic"``, the default :data:`DEFAULT_RESIDUAL`, or
    ``"none"``). Training-free models have no residual. A model that runs channels-last in
    ``spatial_dims`` (:attr:`~crfm_bench.models.base.SRModel.channels_last_dims`) gets its
    parameters in that layout.
    """
    info = model_info(name)
    spatial_dims = check_spatial_dims(spatial_dims)
    factors = parse_scale(scale, spatial_dims, what=f"model '{name}': scale")
    if size not in SIZES:
        raise InputError(f"model '{name}': size {size!r} is not one of {', '.join(SIZES)}")
    residual = overrides.pop("residual", DEFAULT_RESIDUAL if info.trainable else "none")
    if not info.trainable and residual != "none":
        raise InputError(
            f"model '{name}': option residual={residual!r}: a training-free model has none"
        )
    model = info.factory(spatial_dims, factors, size, **overrides)
    model.name = name
    model.set_residual(residual)
    if model.memory_format() != torch.contiguous_format:
        model = model.to(memory_format=model.memory_format())
    return model


def resolve_options(
    name: str, presets: Mapping[str, Mapping[str, Any]], size: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge ``overrides`` into the preset of ``size`` after checking keys and types.

    ``size="paper"`` uses the ``"base"`` preset when ``presets`` has no ``"paper"`` entry (a
    family without a published configuration: crfm is a reconstruction whose ``base`` is
    its paper scale); any other size missing from ``presets`` is an InputError. Integers must be >= 1 and floats >= 0 (a float option accepts an int); booleans must be
    booleans. Raises InputError naming the model and the key.
    """
    options = dict(presets[preset_name(presets, size, name)])
    for key, value in overrides.items():
        if key not in options:
            allowed = ", ".join(sorted(options)) or "none"
            raise InputError(f"model '{name}': unknown option {key!r} (allowed: {allowed})")
        default = options[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            value = float(value) if ok else value
        else:
            ok = isinstance(value, type(default))
        if not ok:
            kind = type(default).__name__
            rule = {"int": " >= 1", "float": " >= 0"}.get(kind, "")
            raise InputError(f"model '{name}': option {key}={value!r} must be {kind}{rule}")
        options[key] = value
    return options


def preset_name(presets: Mapping[str, Mapping[str, Any]], size: str, name: str = "?") -> str:
    """The preset ``size`` resolves to: itself, or :data:`PAPER_FALLBACK` for a missing
    ``paper``; InputError naming the model otherwise."""
    if size in presets:
        return size
    if size == "paper" and PAPER_FALLBACK in presets:
        return PAPER_FALLBACK
    known = ", ".join(presets)
    raise InputError(f"model '{name}': size {size!r} has no preset (known: {known})")


def applicable_models(names: list[str], domain: str) -> tuple[list[str], list[str]]:
    """Split ``names`` into (meant for the degradation ``domain``, not meant for it).

    A model registered with ``domains`` (zerofill: ``("kspace",)``, the ideal interpolator of
    k-space truncation and no natural baseline of image-domain blur + decimation) is
    applicable only to those domains; unknown names are kept (validated elsewhere).
    """
    kept, dropped = [], []
    for name in names:
        info = _REGISTRY.get(name)
        ok = info is None or info.domains is None or domain in info.domains
        (kept if ok else dropped).append(name)
    return kept, dropped


def loss_description(model: SRModel) -> str:
    """The training loss of ``model`` in words: ``"-"`` for a training-free model,
    :meth:`SRModel.loss_description` if the model's class describes its loss, else (a class
    that overrides :meth:`SRModel.loss` only) the first line of its ``loss`` docstring without
    a trailing parenthesis, ``lambda_grad`` replaced by the model's value."""
    if not model.trainable:
        return "-"
    cls = type(model)
    if cls.loss is SRModel.loss or cls.loss_description is not SRModel.loss_description:
        return model.loss_description()
    doc = (cls.loss.__doc__ or "custom loss").strip().splitlines()[0].replace("``", "")
    doc = doc.split(" (")[0].rstrip(".")
    lam = getattr(model, "lambda_grad", None)
    return doc if lam is None else doc.replace("lambda_grad", f"{lam:g}")


def model_card(
    name: str,
    spatial_dims: int = 3,
    scale: object = 2,
    size: str = "tiny",
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a reader needs next to a score: name, family, size, params, residual, loss,
    reads_reference, trainable, and the parameter count of every size (``params_<size>``:
    that size's preset with the same ``residual``, the other options left out)."""
    info = model_info(name)
    options = dict(options or {})

    def build(size: str, **opts: Any) -> SRModel:
        # on the meta device: shapes without memory or initialisation (a paper-size model
        # otherwise costs seconds of random init just to be counted)
        with torch.device("meta"):
            return create_model(name, spatial_dims=spatial_dims, scale=scale, size=size, **opts)

    model = build(size, **options)
    card: dict[str, Any] = {
        "name": name,
        "family": info.family,
        "size": size,
        "params": model.num_parameters(),
        "residual": model.residual if info.trainable else "-",
        "loss": loss_description(model),
        "reads_reference": info.needs_reference,
        "trainable": info.trainable,
    }
    common = {k: v for k, v in options.items() if k == "residual"}
    for other in SIZES:
        built = model if other == size else None
        if built is None:
            built = build(other, **common)
        card[f"params_{other}"] = built.num_parameters()
    return card


#: Columns of :func:`model_table`, in order.
TABLE_COLUMNS = [
    "name",
    "family",
    "size",
    "params",
    "params_tiny",
    "params_base",
    "params_paper",
    "residual",
    "loss",
    "needs_reference",
    "trainable",
    "spatial_dims",
    "description",
]


def model_table(
    spatial_dims: int = 3,
    scale: object = 2,
    configs: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per registered variant (or per name of ``names``) with :data:`TABLE_COLUMNS`.

    ``configs`` maps a name to its ``(size, options)`` as the benchmark configures it (e.g.
    ``residual`` from ``benchmark.residual``); unlisted names use ``tiny`` and the registry's
    defaults. ``params`` is the count of the configured size, ``params_<size>`` of each size.
    """
    rows = []
    for name in list_models() if names is None else names:
        info = model_info(name)
        size, options = (configs or {}).get(name, ("tiny", {}))
        card = model_card(name, spatial_dims, scale, size, options)
        rows.append(
            {
                **{k: v for k, v in card.items() if k != "reads_reference"},
                "needs_reference": card["reads_reference"],
                "spatial_dims": spatial_dims,
                "description": f"{info.description} [{info.citation}]",
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
