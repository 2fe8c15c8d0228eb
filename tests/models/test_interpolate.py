from __future__ import annotations

import pytest
import torch

from crfm_bench.errors import InputError
from crfm_bench.models import create_model
from crfm_bench.models.interpolate import keys_kernel, origin_aligned_upsample

SCALES = [(2, 2), (4, 4), (1, 4), (2, 2, 2), (4, 4, 4), (1, 1, 4), (3, 1, 2)]


def _ramp(size: tuple[int, ...], coeffs: tuple[float, ...], power: int = 1) -> torch.Tensor:
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in size), indexing="ij")
    out = sum(c * g**power for c, g in zip(coeffs, grids, strict=True))
    return out[None, None]


def _interior(size: tuple[int, ...], scale: tuple[int, ...], margin: int) -> tuple[slice, ...]:
    """HR voxels whose interpolation taps all lie inside the LR grid (no clamping)."""
    return (
        slice(None),
        slice(None),
        *(slice(margin * s, (n // s - margin) * s) for n, s in zip(size, scale, strict=True)),
    )


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("mode", "margin"), [("linear", 1), ("cubic", 2)])
def test_linear_ramp_is_reproduced_exactly_in_the_interior(
    scale: tuple[int, ...], mode: str, margin: int
) -> None:
    # HR ramp sampled at m * s (the origin-aligned convention): interpolation at i / s must
    # give back the HR ramp itself, which a half-pixel grid would shift by (s - 1) / 2 voxels.
    size = tuple(12 * s for s in scale)
    coeffs = (0.5, -1.25, 2.0)[: len(scale)]
    hr = _ramp(size, coeffs)
    lr = hr[(Ellipsis, *(slice(None, None, s) for s in scale))]
    up = origin_aligned_upsample(lr, scale, mode)
    assert up.shape == hr.shape
    idx = _interior(size, scale, margin)
    torch.testing.assert_close(up[idx], hr[idx], rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4)])
def test_keys_cubic_reproduces_quadratics(scale: tuple[int, ...]) -> None:
    # Keys (1981): with a = -0.5 the cubic convolution is exact for polynomials of degree 2.
    size = tuple(10 * s for s in scale)
    hr = _ramp(size, (0.3, -0.2, 0.1), power=2)
    lr = hr[(Ellipsis, *(slice(None, None, s) for s in scale))]
    up = origin_aligned_upsample(lr, scale, "cubic")
    idx = _interior(size, scale, 2)
    torch.testing.assert_close(up[idx], hr[idx], rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_lr_samples_are_kept_and_edges_clamp(mode: str) -> None:
    lr = torch.rand(2, 1, 5, 6, 7, dtype=torch.float64)
    up = origin_aligned_upsample(lr, (2, 3, 1), mode)
    assert up.shape == (2, 1, 10, 18, 7)
    torch.testing.assert_close(up[:, :, ::2, ::3], lr, rtol=0, atol=1e-12)
    # beyond the last LR sample the value is held (replicate boundary)
    torch.testing.assert_close(up[:, :, -1], up[:, :, -2], rtol=0, atol=1e-12)


def test_keys_kernel_values() -> None:
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)
    # W(0)=1, W(1)=W(2)=0 (interpolating); W(0.5)=0.5625, W(1.5)=-0.0625 for a=-0.5
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(keys_kernel(t), expected, rtol=0, atol=1e-15)


def test_models_wrap_the_function_and_differ_from_each_other() -> None:
    lr = torch.rand(1, 1, 6, 6, 6)
    cubic = create_model("tricubic", 3, 2)(lr)
    linear = create_model("trilinear", 3, 2)(lr)
    torch.testing.assert_close(cubic, origin_aligned_upsample(lr, (2, 2, 2), "cubic"))
    torch.testing.assert_close(linear, origin_aligned_upsample(lr, (2, 2, 2), "linear"))
    assert (cubic - linear).abs().max() > 1e-3


def test_wrong_rank_is_an_input_error() -> None:
    with pytest.raises(InputError, match="spatial axes"):
        origin_aligned_upsample(torch.rand(1, 1, 4, 4), (2, 2, 2))
