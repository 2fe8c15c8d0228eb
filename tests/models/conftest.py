"""Shared fixtures of the model tests: one torch thread, fixed seeds, tiny synthetic volumes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _modest_torch() -> Iterator[None]:
    """Run each test on one thread (others share the machine) with a fixed seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _smooth_volume(shape: tuple[int, ...], seed: int = 0, passes: int = 3) -> torch.Tensor:
    """Uniform noise in [0, 1] low-passed by ``passes`` circular 3-tap box filters per axis.

    ``shape`` is (B, C, *S); the result stays in [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    for _ in range(passes):
        for axis in range(2, x.ndim):
            x = (x + x.roll(1, axis) + x.roll(-1, axis)) / 3
    return x


def _decimate(hr: torch.Tensor, scale: tuple[int, ...]) -> torch.Tensor:
    """Origin-aligned LR by plain subsampling ``hr[..., ::s_x, ::s_y, ...]``."""
    return hr[(Ellipsis, *(slice(None, None, s) for s in scale))]


@pytest.fixture
def smooth_volume() -> Callable[..., torch.Tensor]:
    """``smooth_volume(shape, seed=0, passes=3)``: smooth noise in [0, 1], shape (B, C, *S)."""
    return _smooth_volume


@pytest.fixture
def decimate() -> Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor]:
    """``decimate(hr, scale)``: origin-aligned LR ``hr[..., ::s, ...]``."""
    return _decimate
