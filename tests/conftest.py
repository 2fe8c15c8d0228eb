"""Shared fixtures: environment for the stack, tiny synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crfm_bench.stackenv import apply_defaults

apply_defaults()

torch.set_num_threads(2)


# Variables an in-process step sets for the processes it starts (the local Ray's loopback mode
# and state-API address): a later test's subprocess must not inherit them from an earlier test.
_PROCESS_ENV = (
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    "RAY_API_SERVER_ADDRESS",
    "MLFLOW_TRACKING_URI",
)


@pytest.fixture(autouse=True)
def _environment_per_test():
    import os

    before = {k: os.environ.get(k) for k in _PROCESS_ENV}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """Function returning a free TCP port on the loopback interface (for real local servers)."""
    return _free_port
