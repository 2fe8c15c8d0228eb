"""Image-domain degradation: Gaussian FWHM, centred slice profile, decimation, affines."""

from __future__ import annotations

import numpy as np
import pytest

from crfm_bench.data.volume import Volume
from crfm_bench.degrade.image import ImageDegradation, blur_decimate, slice_profile_weights
from crfm_bench.errors import InputError


def delta_response(blur: str, s: int, offset: int, fwhm_factor: float = 1.0) -> float:
    """LR value at sample 5 (HR voxel 5*s) for a unit delta ``offset`` voxels from it."""
    x = np.zeros((1 + 10 * s, 1, 1), np.float32)
    x[5 * s + offset] = 1.0
    lr = blur_decimate(x, (s, 1, 1), blur, fwhm_factor)  # type: ignore[arg-type]
    return float(lr[5, 0, 0])


@pytest.mark.parametrize("s", [2, 4])
@pytest.mark.parametrize("fwhm_factor", [1.0, 1.5])
def test_gaussian_full_width_at_half_maximum(s: int, fwhm_factor: float) -> None:
    """By definition of FWHM: a delta FWHM/2 away gives half the on-sample response."""
    fwhm = fwhm_factor * s
    peak = delta_response("gaussian", s, 0, fwhm_factor)
    # FWHM/2 may fall between voxels: interpolate log-response (a parabola for a Gaussian).
    d = fwhm / 2
    lo, hi = int(np.floor(d)), int(np.ceil(d))
    if lo == hi:
        half = delta_response("gaussian", s, lo, fwhm_factor)
    else:
        a, b = (np.log(delta_response("gaussian", s, k, fwhm_factor)) for k in (lo, hi))
        # log g(k) = c - k^2 / (2 sigma^2): exact in k^2
        half = float(np.exp(a + (b - a) * (d**2 - lo**2) / (hi**2 - lo**2)))
    assert half / peak == pytest.approx(0.5, rel=1e-3)
    assert delta_response("gaussian", s, 1, fwhm_factor) == pytest.approx(
        delta_response("gaussian", s, -1, fwhm_factor)
    )  # centred


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_slice_profile_is_a_centred_box_of_width_s(s: int) -> None:
    w = slice_profile_weights(s)
    assert w.sum() == pytest.approx(1.0)
    assert len(w) % 2 == 1 and np.allclose(w, w[::-1])
    # Overlap of the box [-s/2, s/2] with each unit voxel [k - 1/2, k + 1/2]:
    k = np.arange(len(w)) - len(w) // 2
    overlap = np.clip(np.minimum(k + 0.5, s / 2) - np.maximum(k - 0.5, -s / 2), 0, None)
    np.testing.assert_allclose(w, overlap / s)
    for offset, weight in zip(k, w, strict=True):
        assert delta_response("slice_profile", s, int(offset)) == pytest.approx(weight)


@pytest.mark.parametrize("blur", ["gaussian", "slice_profile"])
@pytest.mark.parametrize("scale", [(2, 2, 2), (4, 4, 4), (1, 1, 4), (3, 1, 2)])
def test_shapes_affine_constants_and_ramps(blur, scale, hr_affine) -> None:
    shape = (30, 29, 23)
    op = ImageDegradation(scale, blur=blur)
    lr = op.apply(Volume(np.full(shape, 3.0, np.float32), hr_affine), None)
    expected_shape = tuple(-(-n // s) for n, s in zip(shape, scale, strict=True))
    assert lr.data.shape == expected_shape == op.lr_shape(shape)
    np.testing.assert_allclose(lr.affine, hr_affine @ np.diag([*scale, 1.0]), atol=1e-12)
    np.testing.assert_allclose(lr.data, 3.0, rtol=1e-6)  # kernels sum to 1, edges clamped
    # A centred symmetric kernel keeps a linear ramp: LR sample m reads HR value at m*s.
    grid = np.indices(shape, dtype=np.float32)
    ramp = 1.0 * grid[0] + 2.0 * grid[1] + 3.0 * grid[2]
    lr_ramp = op.apply(Volume(ramp, hr_affine), None).data
    m = np.indices(lr_ramp.shape, dtype=np.float32)
    expected = sum(c * mi * s for c, mi, s in zip((1.0, 2.0, 3.0), m, scale, strict=True))
    interior = tuple(slice(2, k - 2) for k in lr_ramp.shape)  # away from clamped edges
    np.testing.assert_allclose(lr_ramp[interior], expected[interior], rtol=1e-5, atol=1e-3)


def test_undegraded_axes_are_untouched() -> None:
    rng = np.random.default_rng(0)
    plane = rng.random((12, 10, 1), dtype=np.float32)
    x = np.repeat(plane, 16, axis=2)  # varies in-plane only
    for blur in ("gaussian", "slice_profile"):
        lr = ImageDegradation((1, 1, 4), blur=blur).apply(Volume(x, np.eye(4)), None)
        assert lr.data.shape == (12, 10, 4)
        np.testing.assert_allclose(lr.data, x[:, :, ::4], rtol=1e-6)


def test_deterministic_and_invalid_parameters() -> None:
    x = np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)
    op = ImageDegradation(2)
    a = op.apply(Volume(x, np.eye(4)), np.random.default_rng(1)).data
    b = op.apply(Volume(x, np.eye(4)), np.random.default_rng(2)).data
    assert a.tobytes() == b.tobytes() and a.dtype == np.float32
    with pytest.raises(InputError, match="blur"):
        ImageDegradation(2, blur="box")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="fwhm_factor"):
        ImageDegradation(2, fwhm_factor=0.0)
    with pytest.raises(InputError, match="scale"):
        ImageDegradation("1x1")
