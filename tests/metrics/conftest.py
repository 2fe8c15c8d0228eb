"""Fixtures of the metric tests: one torch thread, the synthetic (prediction, HR) pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .phantoms import phantom_hr, phantom_sr


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Other areas' tests may run at the same time on 2 cores: use one thread here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    """(sr, hr), both (26, 24, 22) float64."""
    hr = phantom_hr()
    return phantom_sr(hr), hr
