from __future__ import annotations

import math

import pytest
import torch

from crfm_bench.degrade.kspace import kspace_crop
from crfm_bench.models import create_model


def _band_limited(size: tuple[int, ...], scale: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Positive real volume whose spectrum lies strictly inside the LR band of ``scale``."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in size), indexing="ij")
    x = torch.full(size, 2.0, dtype=torch.float64)
    for _ in range(6):
        phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        arg = torch.zeros(size, dtype=torch.float64)
        for grid, n, s in zip(grids, size, scale, strict=True):
            kmax = n // s // 2 - 1  # below the LR Nyquist frequency
            k = int(torch.randint(-kmax, kmax + 1, (1,), generator=g))
            arg = arg + 2 * math.pi * k * grid / n
        x = x + 0.25 * torch.cos(arg + phase)
    return x[None, None]


@pytest.mark.parametrize(
    ("size", "scale"),
    [((16, 16, 16), (2, 2, 2)), ((16, 16, 16), (4, 4, 4)), ((12, 8, 16), (1, 1, 4)),
     ((16, 24), (2, 2)), ((16, 16), (1, 4))],
)  # fmt: skip
def test_zerofill_inverts_kspace_crop_of_a_band_limited_volume(
    size: tuple[int, ...], scale: tuple[int, ...]
) -> None:
    hr = _band_limited(size, scale)
    lr = kspace_crop(hr, scale).abs()
    assert lr.shape[2:] == tuple(n // s for n, s in zip(size, scale, strict=True))
    sr = create_model("zerofill", spatial_dims=len(size), scale=scale)(lr)
    torch.testing.assert_close(sr, hr, rtol=0, atol=1e-12)
    # float32 input keeps float32 and float precision
    sr32 = create_model("zerofill", spatial_dims=len(size), scale=scale)(lr.float())
    assert sr32.dtype == torch.float32
    torch.testing.assert_close(sr32, hr.float(), rtol=0, atol=1e-5)


def test_zerofill_is_not_the_cubic_interpolant() -> None:
    hr = _band_limited((16, 16, 16), (2, 2, 2), seed=1)
    lr = kspace_crop(hr, (2, 2, 2)).abs()
    cubic = create_model("tricubic", 3, 2)(lr)
    assert (cubic - hr).abs().max() > 1e-3
