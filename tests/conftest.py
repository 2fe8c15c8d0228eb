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
