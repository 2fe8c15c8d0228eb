"""evaluate_volume: golden values, independent cross-checks and the contract's conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import structural_similarity

from crfm_bench.errors import InputError
from crfm_bench.metrics import METRIC_NAMES, evaluate_volume, summarise
from crfm_bench.metrics.volume import ssim_map

from . import reference as ref
from .phantoms import SHAPE, head, phantom_hr, phantom_sr

# float32 SSIM maps (torchmetrics) against float64 truth: volume means agree to a few 1e-6
SSIM_TOL = 5e-6

# Golden values of the phantom pair (conftest ``pair``), computed once with the float64
# numpy/scipy formulas of ``reference.py`` (not with the library). A change of convention
# (percentile, clipping, window, padding, K1/K2, masking, slice averaging) moves them by far
# more than the tolerances (>= 1e-4); the SSIM tolerance allows for torchmetrics' float32
# maps, whose means are within ~2.5e-6 of float64 (see crfm_bench.metrics.volume).
GOLDEN = {
    "psnr": 21.739370775081305,
    "ssim": 0.8815627153447877,
    "psnr_masked": 17.820141868715595,
    "ssim_masked": 0.8735603460078092,
    "ssim_slice": 0.8342867622609901,
    "nmse": 0.05653794891447602,
}
TOL = {
    "psnr": 1e-4,
    "ssim": SSIM_TOL,
    "psnr_masked": 1e-4,
    "ssim_masked": SSIM_TOL,
    "ssim_slice": SSIM_TOL,
    "nmse": 1e-10,
}


def test_golden_values(pair):
    sr, hr = pair
    got = evaluate_volume(sr, hr)
    for name, expected in GOLDEN.items():
        assert got[name] == pytest.approx(expected, abs=TOL[name]), name


def test_result_keys_and_types(pair):
    got = evaluate_volume(*pair)
    assert tuple(got) == METRIC_NAMES
    assert all(type(v) is float for v in got.values())


def test_float32_input_like_load_volume(pair):
    sr, hr = pair
    got = evaluate_volume(sr.astype(np.float32), hr.astype(np.float32))
    assert got["psnr"] == pytest.approx(GOLDEN["psnr"], abs=1e-3)
    assert got["ssim"] == pytest.approx(GOLDEN["ssim"], abs=1e-5)


def test_psnr_matches_numpy_formula(pair):
    sr, hr = pair
    mask = head()
    x, y = ref.normalise(sr, hr, mask)
    got = evaluate_volume(sr, hr, mask=mask)
    # torchmetrics converts dB with a float32 ln(10): relative error ~5e-8
    assert got["psnr"] == pytest.approx(ref.psnr(x, y), rel=2e-7)
    assert got["psnr_masked"] == pytest.approx(ref.psnr(x[mask], y[mask]), rel=2e-7)
    assert got["nmse"] == pytest.approx(np.sum((x - y) ** 2) / np.sum(y**2), rel=1e-12)


def test_masked_psnr_is_boolean_indexed_not_zero_filled(pair):
    sr, hr = pair
    mask = head()
    x, y = ref.normalise(sr, hr, mask)
    zero_filled = ref.psnr(np.where(mask, x, 0.0), np.where(mask, y, 0.0))
    got = evaluate_volume(sr, hr, mask=mask)["psnr_masked"]
    # zero-filling divides the foreground error by all voxels: 10 log10(N / n_mask) dB higher
    assert zero_filled - got == pytest.approx(10 * np.log10(mask.size / mask.sum()), abs=1e-5)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_ssim_matches_float64_reference(pair, slice_axis):
    sr, hr = pair
    mask = head()
    x, y = ref.normalise(sr, hr, mask)
    full = ref.ssim_map(x, y)
    per_slice = ref.ssim_per_slice(x, y, slice_axis)
    in_plane = tuple(a for a in range(3) if a != slice_axis)
    with_fg = mask.any(axis=in_plane)
    got = evaluate_volume(sr, hr, mask=mask, slice_axis=slice_axis)
    assert got["ssim"] == pytest.approx(full.mean(), abs=SSIM_TOL)
    assert got["ssim_masked"] == pytest.approx(full[mask].mean(), abs=SSIM_TOL)
    assert got["ssim_slice"] == pytest.approx(per_slice[with_fg].mean(), abs=SSIM_TOL)
    # the slice mean is over slices with foreground only, which here is a different number
    assert abs(per_slice[with_fg].mean() - per_slice.mean()) > 1e-3


def test_ssim_agrees_with_skimage_where_skimage_defines_it(pair):
    """scikit-image (Gaussian sigma 1.5, population covariance) crops a 5-voxel border
    before averaging, torchmetrics reflect-pads and averages the whole map: the maps agree
    on the interior, so the interior means agree; the whole-volume means differ by the
    border's share (large for this small, textured-to-the-border phantom)."""
    sr, hr = pair
    x, y = ref.normalise(sr, hr, head())
    sk_mean, sk_map = structural_similarity(
        y,
        x,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        full=True,
    )
    interior = (slice(5, -5),) * 3
    np.testing.assert_allclose(ref.ssim_map(x, y)[interior], sk_map[interior], atol=1e-12)
    ours = ssim_map(x, y)
    assert ours[interior].mean(dtype=np.float64) == pytest.approx(sk_mean, abs=SSIM_TOL)
    whole = evaluate_volume(sr, hr, mask=head())["ssim"]
    border_effect = ours.mean(dtype=np.float64) - ours[interior].mean(dtype=np.float64)
    assert whole - sk_mean == pytest.approx(border_effect, abs=SSIM_TOL)


def _checkerboard_ssim(mean_x, amp_x, mean_y, amp_y, dims, data_range=1.0):
    """Closed-form mean SSIM of x = mean_x + amp_x * c, y = mean_y + amp_y * c, where
    c = (-1)^(i+j+k) is a checkerboard with as many +1 as -1 voxels.

    Mirror (reflect) padding keeps the checkerboard, and a separable Gaussian window with
    weights g_k turns c into gamma^dims * c, gamma = sum_k (-1)^k g_k. So the local means are
    mean + amp * gamma^dims * c and the (co)variances amp_x * amp_y * (1 - gamma^(2 dims))."""
    k = np.arange(-5, 6)
    g = np.exp(-(k**2) / (2 * 1.5**2))
    gamma = float(np.sum((-1.0) ** k * g / g.sum()))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    var = 1 - gamma ** (2 * dims)
    cs = (2 * amp_x * amp_y * var + c2) / ((amp_x**2 + amp_y**2) * var + c2)
    values = []
    for sign in (1.0, -1.0):
        mx = mean_x + amp_x * gamma**dims * sign
        my = mean_y + amp_y * gamma**dims * sign
        values.append((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs)
    return float(np.mean(values))


def test_checkerboard_pair_has_closed_form_metrics():
    """HR alternates 800/400 (-> 1 and 0.5 after normalisation: the 99.5th percentile is
    800), the prediction 720/480 (-> 0.9 and 0.6). Error +-0.1 everywhere: PSNR = 20 dB;
    SSIM by the closed form above, which also shows the convention matters: with
    torchmetrics' data_range=None (range 0.5 here) it would be another number."""
    checker = (-1.0) ** np.indices(SHAPE).sum(axis=0)
    hr = 600.0 + 200.0 * checker
    sr = 600.0 + 120.0 * checker
    got = evaluate_volume(sr, hr)
    assert got["psnr"] == pytest.approx(20.0, rel=2e-7)
    assert got["psnr_masked"] == pytest.approx(20.0, rel=2e-7)
    assert got["nmse"] == pytest.approx(0.01 / np.mean(np.where(checker > 0, 1.0, 0.25)))
    expected_3d = _checkerboard_ssim(0.75, 0.25, 0.75, 0.15, dims=3)
    assert got["ssim"] == pytest.approx(expected_3d, abs=SSIM_TOL)
    assert got["ssim_masked"] == pytest.approx(expected_3d, abs=SSIM_TOL)
    expected_2d = _checkerboard_ssim(0.75, 0.25, 0.75, 0.15, dims=2)
    assert got["ssim_slice"] == pytest.approx(expected_2d, abs=SSIM_TOL)
    other = _checkerboard_ssim(0.75, 0.25, 0.75, 0.15, dims=3, data_range=0.5)
    assert abs(other - expected_3d) > 1e-4


def test_identical_volumes(pair):
    _, hr = pair
    got = evaluate_volume(hr.copy(), hr)
    assert got["psnr"] == np.inf
    assert got["psnr_masked"] == np.inf
    for name in ("ssim", "ssim_masked", "ssim_slice"):
        assert got[name] == pytest.approx(1.0, abs=SSIM_TOL), name
    assert got["nmse"] == 0.0


def test_psnr_is_per_volume_not_pooled():
    hr = phantom_hr()
    mask = head()
    small = hr + 10.0 * mask * np.cos(np.arange(hr.size).reshape(hr.shape))
    large = hr + 80.0 * mask * np.sin(np.arange(hr.size).reshape(hr.shape))
    rows, mses = [], []
    for name, sr in (("small", small), ("large", large)):
        x, y = ref.normalise(sr, hr, mask)
        mses.append(np.mean((x - y) ** 2))
        got = evaluate_volume(sr, hr, mask=mask)
        assert got["psnr"] == pytest.approx(ref.psnr(x, y), rel=2e-7)
        rows.append({"model": "m", "subject": name, **got})
    per_subject = pd.DataFrame(rows)
    assert per_subject["psnr"].iloc[0] - per_subject["psnr"].iloc[1] > 10  # their own PSNRs
    mean_psnr = summarise(per_subject)["psnr_mean"].iloc[0]
    pooled = 10 * np.log10(1 / np.mean(mses))
    assert mean_psnr == pytest.approx(per_subject["psnr"].mean(), rel=1e-12)
    assert mean_psnr - pooled > 3  # the mean of per-volume PSNRs, not the pooled MSE's PSNR


def test_same_scale_for_both_volumes(pair):
    sr, hr = pair
    base = evaluate_volume(sr, hr)
    scaled = evaluate_volume(sr * 37.5, hr * 37.5)
    for name in METRIC_NAMES:
        assert scaled[name] == pytest.approx(base[name], abs=SSIM_TOL), name
    # the prediction is divided by the HR's divisor, so rescaling it alone is penalised
    assert evaluate_volume(sr * 1.5, hr)["psnr"] < base["psnr"] - 3


def test_slice_ssim_ignores_slices_without_foreground(pair):
    sr, hr = pair
    mask = head()
    assert not mask[:, :, 0].any()
    damaged = sr.copy()
    damaged[:, :, 0] = 500.0  # an error in a background-only slice
    base = evaluate_volume(sr, hr, mask=mask)
    got = evaluate_volume(damaged, hr, mask=mask)
    assert got["ssim_slice"] == base["ssim_slice"]
    assert got["ssim"] < base["ssim"] - 1e-3


def test_slice_axis_selects_the_slices(pair):
    sr, hr = pair
    values = {a: evaluate_volume(sr, hr, slice_axis=a)["ssim_slice"] for a in (0, 1, 2)}
    assert len({round(v, 6) for v in values.values()}) == 3


def test_smallest_volume_is_the_window():
    shape = (11, 12, 11)
    hr = phantom_hr(shape)
    got = evaluate_volume(phantom_sr(hr), hr)
    assert 0 < got["ssim"] < 1
    with pytest.raises(InputError, match=r"\(11, 10, 11\).*at least 11 voxels"):
        evaluate_volume(np.ones((11, 10, 11)), np.ones((11, 10, 11)))


def test_shape_mismatch_names_both_shapes(pair):
    sr, hr = pair
    with pytest.raises(InputError, match=r"sr\.nii\.gz: shape \(26, 24, 21\).*\(26, 24, 22\)"):
        evaluate_volume(sr[..., :-1], hr, what="sr.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_prediction_is_rejected(pair, bad):
    sr, hr = pair
    sr = sr.copy()
    sr[3, 4, 5] = bad
    sr[6, 7, 8] = bad
    with pytest.raises(InputError, match="prediction: 2 voxels are NaN or Inf"):
        evaluate_volume(sr, hr)


def test_non_finite_hr_is_rejected(pair):
    sr, hr = pair
    hr = hr.copy()
    hr[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="HR volume: 1 voxels are NaN or Inf"):
        evaluate_volume(sr, hr)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slice_axis": 3}, "slice_axis"),
        ({"slice_axis": True}, "slice_axis"),
        ({"mask": np.ones((26, 24, 21), dtype=bool)}, r"mask: shape \(26, 24, 21\)"),
        ({"mask": np.zeros(SHAPE, dtype=bool)}, "mask: the foreground mask is empty"),
        ({"mask": np.ones(SHAPE)}, "mask: expected a boolean array"),
    ],
)
def test_bad_options_are_rejected(pair, kwargs, message):
    with pytest.raises(InputError, match=message):
        evaluate_volume(*pair, **kwargs)


def test_not_3d_is_rejected():
    with pytest.raises(InputError, match="expected a 3D volume"):
        evaluate_volume(np.ones((16, 16)), np.ones((16, 16)))
