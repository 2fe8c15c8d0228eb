"""Shared fixtures: environment for the stack, tiny synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crfm_bench.stackenv import apply_defaults

apply_defaults()

torch.set_num_threads(2)


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
