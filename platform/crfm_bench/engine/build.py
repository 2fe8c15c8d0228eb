"""One place that builds a model as the benchmark configures it.

``models.<name>`` in params.yaml holds the model's size, its constructor ``options`` and the
training knobs ``lr``/``epochs``/``batch_size``. A tuning override (a Ray Tune sample) may
name either kind; :data:`TRAIN_KEYS` are the training knobs among them, never passed to the
model's constructor ("lr is not a model option" is written here and nowhere else).
"""

from __future__ import annotations

from typing import Any

from crfm_bench.config import Params

TRAIN_KEYS = ("lr",)


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(training knobs, model options)`` of a tuning override (see :data:`TRAIN_KEYS`)."""
    overrides = dict(overrides or {})
    train = {k: overrides.pop(k) for k in TRAIN_KEYS if k in overrides}
    return train, overrides


def model_options(params: Params, name: str, overrides: dict[str, Any] | None = None) -> dict:
    """Constructor options of ``name``: ``models.<name>.options`` updated by the model options
    of ``overrides``; a learned model without its own ``residual`` gets ``benchmark.residual``
    (the one benchmark-wide global residual: every place that builds a model, and the run
    key, read the options here)."""
    from crfm_bench.models import list_models, model_info

    _, options = split_overrides(overrides)
    options = {**params.model_config_for(name).options, **options}
    if "residual" not in options and name in list_models() and model_info(name).trainable:
        options["residual"] = params.benchmark.residual
    return options


def build_model(params: Params, name: str, overrides: dict[str, Any] | None = None):
    """The model ``name`` (3D, ``task.scale``, configured size and options, tuning overrides);
    an InputError naming the option if one is unknown or of the wrong type."""
    from crfm_bench.models import create_model

    return create_model(
        name,
        spatial_dims=3,
        scale=params.task.factors,
        size=params.model_config_for(name).size,
        **model_options(params, name, overrides),
    )


def base_lr(params: Params, name: str, overrides: dict[str, Any] | None = None) -> float:
    """The learning rate: a tuning override, else ``models.<name>.lr``, else ``train.lr``."""
    train, _ = split_overrides(overrides)
    return float(train.get("lr") or params.model_config_for(name).lr or params.train.lr)
