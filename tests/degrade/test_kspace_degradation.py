"""k-space truncation: fast path = reference convention, band-limited round trip, windows, noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from degrade_phantoms import SHAPE, ellipsoid

from crfm_bench.data.volume import Volume
from crfm_bench.degrade.kspace import (
    KSpaceDegradation,
    apply_kspace_window,
    foreground_mean,
    kspace_band,
    kspace_crop,
    kspace_frequencies,
    kspace_place,
    kspace_window,
    kspace_zero_fill,
)
from crfm_bench.errors import InputError

ODD_SHAPES = [(32, 28, 24), (33, 27, 25), (30, 29, 23), (9, 10, 7)]
SCALES = [(2, 2, 2), (4, 4, 4), (1, 1, 4), (3, 1, 2), (4, 1, 1)]


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("scale", SCALES)
def test_fast_band_matches_reference_crop_and_zero_fill(shape, scale) -> None:
    """rfftn + Hermitian gather == the reference fftshift/crop (kspace_crop), any parity."""
    x = torch.from_numpy(np.random.default_rng(3).random(shape, dtype=np.float32))
    reference = kspace_crop(x, scale)
    band = kspace_band(x, scale)
    lr = torch.fft.ifftn(band, norm="forward")
    torch.testing.assert_close(lr, reference, atol=2e-6, rtol=0)
    complex_path = torch.fft.ifftn(kspace_band(x.to(torch.complex64), scale), norm="forward")
    torch.testing.assert_close(complex_path, reference, atol=2e-6, rtol=0)
    torch.testing.assert_close(
        kspace_place(band, shape), kspace_zero_fill(reference, shape), atol=2e-6, rtol=0
    )


def bandlimited(shape, max_freq, seed=0) -> np.ndarray:
    """A positive real volume made of cosines with |frequency| <= max_freq per axis."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    out = np.full(shape, 4.0)
    for _ in range(12):
        f = [rng.integers(-m, m + 1) for m in max_freq]
        phase = sum(2 * np.pi * fi * g / n for fi, g, n in zip(f, grid, shape, strict=True))
        out += rng.uniform(0.1, 0.4) * np.cos(phase + rng.uniform(0, 2 * np.pi))
    return out.astype(np.float32)


@pytest.mark.parametrize("scale", [(2, 2, 2), (4, 4, 4), (1, 1, 4)])
def test_bandlimited_volume_survives_crop_and_zero_fill(scale) -> None:
    """Sampling theorem: a spectrum inside the kept band is recovered exactly.

    Zero-filling the LR band gives back the HR volume, and the LR samples are the HR
    values at voxels m*s (the origin-aligned convention).
    """
    shape = SHAPE
    max_freq = [n // s // 2 - 1 if s > 1 else n // 2 - 1 for n, s in zip(shape, scale, strict=True)]
    x = bandlimited(shape, max_freq)
    lr, zf = KSpaceDegradation(scale).apply_with_zero_fill(
        Volume(x, np.eye(4)), np.random.default_rng(0)
    )
    np.testing.assert_allclose(zf.data, x, rtol=2e-6, atol=0)
    decimated = x[:: scale[0], :: scale[1], :: scale[2]]
    np.testing.assert_allclose(lr.data, decimated, rtol=2e-6, atol=0)
    np.testing.assert_array_equal(zf.affine, np.eye(4))


def test_non_divisible_shape_zooms_by_n_over_m(hr_affine) -> None:
    shape = (30, 29, 23)
    x = np.random.default_rng(0).random(shape, dtype=np.float32) + 1
    lr = KSpaceDegradation(4).apply(Volume(x, hr_affine), np.random.default_rng(0))
    assert lr.data.shape == (8, 7, 6)  # round(N / 4)
    expected = hr_affine @ np.diag([30 / 8, 29 / 7, 23 / 6, 1.0])
    np.testing.assert_allclose(lr.affine, expected, atol=1e-12)


def test_window_shapes() -> None:
    for m in (8, 9, 16):
        f = kspace_frequencies(m)
        for name in ("none", "hann", "tukey"):
            w = kspace_window(m, name, 0.3)
            assert w[0] == 1  # DC kept
            by_freq = dict(zip(f.tolist(), w.tolist(), strict=True))
            for k in range(1, (m - 1) // 2 + 1):  # even in f
                assert by_freq[k] == pytest.approx(by_freq[-k])
        hann = kspace_window(m, "hann")
        if m % 2 == 0:
            assert float(hann[f == -(m // 2)]) == pytest.approx(0, abs=1e-7)
        assert torch.all(torch.diff(hann[: (m + 1) // 2]) < 0)  # decreasing away from DC
        tukey = kspace_window(m, "tukey", 0.3)
        r = f.abs().double() / (m / 2)
        assert torch.all(tukey[r <= 0.7] == 1) and torch.all(tukey[r > 0.7] < 1)
        torch.testing.assert_close(kspace_window(m, "tukey", 1.0), hann)


@pytest.mark.parametrize("window", ["hann", "tukey"])
def test_window_keeps_mean_and_reduces_ringing(window) -> None:
    """A step edge rings (Gibbs, ~9% overshoot); apodisation damps it; DC is unchanged."""
    n = 96
    x = np.zeros((4, 4, n), np.float32)
    x[:, :, 24:72] = 1
    z = np.arange(n)
    far = np.minimum(np.abs(z - 23.5), np.abs(z - 71.5)) >= 12  # >= 3 LR voxels from edges
    results = {}
    for name in ("none", window):
        _, zf = KSpaceDegradation((1, 1, 4), window=name).apply_with_zero_fill(
            Volume(x, np.eye(4)), np.random.default_rng(0)
        )
        profile = zf.data[0, 0]
        results[name] = (profile.max() - 1, np.abs(profile - x[0, 0])[far].mean())
        band = apply_kspace_window(kspace_band(torch.from_numpy(x), (1, 1, 4)), (1, 1, 4), name)
        assert abs(band[0, 0, 0].real.item() - x.mean()) < 1e-6  # DC = mean, w(0) = 1
    assert results["none"][0] > 0.05  # Gibbs overshoot without a window
    assert results[window][1] < 0.75 * results["none"][1]  # tail ringing damped
    if window == "hann":
        assert results["hann"][0] < 0.02
        assert results["hann"][1] < 0.1 * results["none"][1]


def noisy_and_clean(op: KSpaceDegradation, x: np.ndarray, seed: int):
    vol = Volume(x, np.eye(4))
    clean_op = KSpaceDegradation(op.scale, window=op.window, tukey_alpha=op.tukey_alpha)
    noisy = op.apply_with_zero_fill(vol, np.random.default_rng(seed))
    clean = clean_op.apply_with_zero_fill(vol, np.random.default_rng(seed))
    return noisy, clean


@pytest.mark.parametrize("window", ["none", "hann"])
def test_noise_matches_target_snr(window) -> None:
    """Noise std in bright tissue = foreground mean / snr, on the LR and zero-filled grids."""
    shape = (48, 48, 48)
    x = ellipsoid(shape, value=2.0, edge=0.05)  # sharp-edged uniform object of intensity 2
    assert foreground_mean(x) == pytest.approx(2.0, rel=0.05)
    snr = 20.0
    op = KSpaceDegradation(2, window=window, snr=snr)
    sigma = op.noise_sigma(Volume(x, np.eye(4)))
    assert sigma == pytest.approx(foreground_mean(x) / snr)
    (lr, zf), (lr0, zf0) = noisy_and_clean(op, x, seed=5)
    inner = lr0.data > 1.6  # bright tissue: Rician noise ~ Gaussian of std sigma
    measured = np.std(lr.data[inner] - lr0.data[inner])
    assert measured == pytest.approx(sigma, rel=0.1)
    inner_hr = zf0.data > 1.6
    measured_zf = np.std(zf.data[inner_hr] - zf0.data[inner_hr])
    assert measured_zf == pytest.approx(sigma, rel=0.1)
    assert abs(np.mean(lr.data[inner] - lr0.data[inner])) < 0.1 * sigma  # zero-mean


def test_same_seed_same_bytes_other_seed_other_noise() -> None:
    x = ellipsoid(SHAPE) + 0.1
    op = KSpaceDegradation(2, window="hann", snr=15.0)
    vol = Volume(x, np.eye(4))
    a = op.apply(vol, np.random.default_rng(11))
    b = op.apply(vol, np.random.default_rng(11))
    c = op.apply(vol, np.random.default_rng(12))
    assert a.data.tobytes() == b.data.tobytes()
    assert not np.allclose(a.data, c.data)
    lr, _ = op.apply_with_zero_fill(vol, np.random.default_rng(11))
    assert lr.data.tobytes() == a.data.tobytes()  # the pair shares apply()'s noise
    assert a.data.dtype == np.float32 and a.data.min() >= 0  # magnitude


def test_invalid_parameters_raise_input_error() -> None:
    with pytest.raises(InputError, match="scale"):
        KSpaceDegradation(1)
    with pytest.raises(InputError, match="window"):
        KSpaceDegradation(2, window="kaiser")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="tukey_alpha"):
        KSpaceDegradation(2, window="tukey", tukey_alpha=0.0)
    with pytest.raises(InputError, match="snr"):
        KSpaceDegradation(2, snr=0.0)
    with pytest.raises(InputError, match="too short"):
        KSpaceDegradation((1, 1, 8)).apply(Volume(np.ones((4, 4, 3), np.float32), np.eye(4)), None)
    with pytest.raises(InputError, match="foreground"):
        foreground_mean(-np.ones((4, 4, 4), np.float32))
