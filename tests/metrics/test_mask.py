"""foreground_mask: the documented rule (fraction of a high percentile, largest component,
holes filled) on phantoms whose true foreground is known."""

from __future__ import annotations

import numpy as np
import pytest

from crfm_bench.errors import InputError
from crfm_bench.metrics import foreground_mask

from .phantoms import SHAPE, head, hole, phantom_hr


def test_phantom_mask_is_the_head():
    """The dark hole (below threshold) is filled; the positive floor outside is excluded."""
    hr = phantom_hr()
    assert (hr[hole()] < 0.1 * hr[head() & ~hole()].min()).all()  # the hole really is dark
    mask = foreground_mask(hr)
    assert mask.dtype == np.bool_
    assert mask.shape == SHAPE
    np.testing.assert_array_equal(mask, head())


def test_isolated_bright_speck_is_dropped():
    hr = phantom_hr()
    hr[0:2, 0:2, 0:2] = 1000.0  # a bright artefact in a corner, not touching the head
    np.testing.assert_array_equal(foreground_mask(hr), head())


def test_a_few_hot_voxels_do_not_move_the_threshold():
    """0.2 % of the voxels 100x too bright: the 99th percentile ignores them (a rule based
    on the maximum would put the threshold above the whole brain)."""
    hr = phantom_hr()
    inside = np.flatnonzero(head())
    hr.flat[inside[:: len(inside) // 25][:25]] *= 100.0
    assert 25 / hr.size < 0.002 + 1e-9
    np.testing.assert_array_equal(foreground_mask(hr), head())


def test_threshold_is_a_tenth_of_the_99th_percentile():
    """A rim attached to a uniform head is kept at 0.11 x the head's intensity and dropped
    at 0.09 x (the 99th percentile of the positive voxels is the head's intensity)."""
    inside = head()
    rim = np.zeros(SHAPE, dtype=bool)
    rim[:, :, 1:3] = True  # two slices at the bottom, touching the head's lowest voxels
    rim &= ~inside
    for level, kept in ((0.11, True), (0.09, False)):
        hr = np.where(inside, 1000.0, 1.0)
        hr[rim] = 1000.0 * level
        mask = foreground_mask(hr)
        assert mask[rim].all() == kept
        assert mask[inside].all()
        assert mask.sum() == inside.sum() + kept * rim.sum()


def test_mask_does_not_depend_on_the_intensity_unit():
    hr = phantom_hr()
    np.testing.assert_array_equal(foreground_mask(hr * 1e-3), foreground_mask(hr))


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        (np.zeros(SHAPE), "no positive voxel"),
        (np.full(SHAPE, np.nan), "voxels are NaN or Inf"),
        (np.ones((20, 20)), "expected 3D"),
    ],
)
def test_unusable_hr_is_rejected(volume, message):
    with pytest.raises(InputError, match=message):
        foreground_mask(volume)
