"""The model zoo: every super-resolution network the benchmark can train or run.

Importing this package registers every model (one module per family). Use
:func:`create_model` (``create_model("crfm", spatial_dims=3, scale="1x1x4")``),
:func:`list_models`, :func:`model_info` and :func:`model_table`.
"""

from crfm_bench.models import classical, crfm, edsr, edsr_fmp, minet, rcan  # noqa: F401
from crfm_bench.models.base import SRModel
from crfm_bench.models.registry import (
    ModelInfo,
    create_model,
    list_models,
    model_info,
    model_table,
    register_model,
)

__all__ = [
    "ModelInfo",
    "SRModel",
    "create_model",
    "list_models",
    "model_info",
    "model_table",
    "register_model",
]
