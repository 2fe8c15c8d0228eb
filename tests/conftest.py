"""Shared fixtures: environment for the stack, tiny synthetic volumes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

for _k, _v in {
    "RAY_AUTH_MODE": "disabled",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}.items():
    os.environ.setdefault(_k, _v)

torch.set_num_threads(2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
