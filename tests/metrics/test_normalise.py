"""normalise_pair: the HR foreground 99.5th percentile divides both volumes; clip to [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from crfm_bench.errors import InputError
from crfm_bench.metrics import normalise_pair

from .phantoms import SHAPE, head


def test_divisor_is_the_hr_foreground_percentile(pair):
    sr, hr = pair
    mask = head()
    sr_n, hr_n, divisor = normalise_pair(sr, hr, mask)
    assert divisor == pytest.approx(np.percentile(hr[mask], 99.5), rel=1e-15)
    assert divisor < hr[mask].max()  # the maximum would be a different convention
    np.testing.assert_array_equal(hr_n, np.clip(hr / divisor, 0.0, 1.0))
    np.testing.assert_array_equal(sr_n, np.clip(sr / divisor, 0.0, 1.0))
    assert sr_n.dtype == hr_n.dtype == np.float64
    assert hr_n.min() >= 0.0 and hr_n.max() == 1.0
    # the voxels above the percentile, about 0.5 % of the foreground, are clipped to 1
    assert np.sum(hr_n[mask] == 1.0) == np.sum(hr[mask] >= divisor)
    assert 0 < np.mean(hr_n[mask] == 1.0) < 0.01


def test_divisor_scales_both_volumes(pair):
    sr, hr = pair
    mask = head()
    sr_n, hr_n, divisor = normalise_pair(sr, hr, mask)
    sr_k, hr_k, divisor_k = normalise_pair(sr * 250.0, hr * 250.0, mask)
    assert divisor_k == pytest.approx(divisor * 250.0, rel=1e-12)
    np.testing.assert_allclose(sr_k, sr_n, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hr_k, hr_n, rtol=0, atol=1e-12)


def test_prediction_is_not_normalised_by_itself(pair):
    sr, hr = pair
    mask = head()
    sr_n, _, divisor = normalise_pair(sr * 2.0, hr, mask)
    _, _, own = normalise_pair(hr, sr * 2.0, mask)  # the divisor the prediction would pick
    assert abs(own - divisor) > 0.5 * divisor
    np.testing.assert_array_equal(sr_n, np.clip(sr * 2.0 / divisor, 0.0, 1.0))


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros(SHAPE, dtype=bool), "mask: the foreground mask is empty"),
        (np.ones(SHAPE, dtype=np.uint8), "mask: expected a boolean array"),
        (np.ones((4, 4, 4), dtype=bool), r"shapes differ: .*mask \(4, 4, 4\)"),
    ],
)
def test_bad_mask_is_rejected(pair, mask, message):
    with pytest.raises(InputError, match=message):
        normalise_pair(*pair, mask)


def test_zero_foreground_is_rejected():
    hr = np.zeros(SHAPE)
    hr[0, 0, 0] = 1.0
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5:10, 5:10, 5:10] = True
    with pytest.raises(InputError, match=r"99\.5th percentile is 0\.0, must be > 0"):
        normalise_pair(hr, hr, mask)
