"""The model registry: named variants, each one factory function (the timm habit).

A variant is registered with :func:`register_model` on a factory
``fn(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides) -> SRModel``::

    @register_model("edsr", family="edsr", needs_reference=False, trainable=True,
                    description="...", citation="Lim et al., CVPR-W 2017")
    def edsr(spatial_dims, scale, size, **overrides): ...

Families declare their size presets (``"tiny"`` trains in minutes on 2 CPU cores; ``"base"``
is paper scale) as plain dicts and resolve user overrides with :func:`resolve_options`, so an
unknown or ill-typed key fails with one line naming it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from crfm_bench.errors import InputError
from crfm_bench.models.base import SRModel
from crfm_bench.models.conv import check_spatial_dims
from crfm_bench.scale import parse_scale

SIZES = ("tiny", "base")

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


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    needs_reference: bool,
    trainable: bool,
    description: str,
    citation: str,
) -> Callable[[Factory], Factory]:
    """Decorator registering a factory under ``name`` (a name may be registered once)."""

    def decorate(fn: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(
            name, family, needs_reference, trainable, description, citation, fn
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
    ``(1, 1, 4)``). ``size``: ``"tiny"`` or ``"base"``. ``overrides``: family options such as
    ``n_feats=32`` (InputError naming the key if unknown or of the wrong type), and for
    learned models ``residual`` (``"tricubic"``, the default :data:`DEFAULT_RESIDUAL`, or
    ``"none"``). Training-free models have no residual.
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
    return model


def resolve_options(
    name: str, presets: Mapping[str, Mapping[str, Any]], size: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge ``overrides`` into the preset of ``size`` after checking keys and types.

    Integers must be >= 1 and floats >= 0 (a float option accepts an int); booleans must be
    booleans. Raises InputError naming the model and the key.
    """
    options = dict(presets[size])
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


def model_table(spatial_dims: int = 3, scale: object = 2) -> pd.DataFrame:
    """One row per registered variant (default ``tiny`` size): name, family, params,
    needs_reference, trainable, spatial_dims, description (with its citation)."""
    rows = []
    for name in list_models():
        info = _REGISTRY[name]
        model = create_model(name, spatial_dims=spatial_dims, scale=scale)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": model.num_parameters(),
                "needs_reference": info.needs_reference,
                "trainable": info.trainable,
                "spatial_dims": spatial_dims,
                "description": f"{info.description} [{info.citation}]",
            }
        )
    columns = [
        "name",
        "family",
        "params",
        "needs_reference",
        "trainable",
        "spatial_dims",
        "description",
    ]
    return pd.DataFrame(rows, columns=columns)
