"""Aligned patch sampling: LR corner c pairs with HR corner c * s."""

from __future__ import annotations

import numpy as np
import pytest

from crfm_bench.engine.data import Case, PatchDataset, patch_shape, robust_divisor


def make_case(rng, shape=(24, 20, 16), scale=(2, 2, 2), subject="s0") -> Case:
    hr = rng.random(shape).astype(np.float32)
    hr[4:-4, 4:-4, 4:-4] += 1.0
    lr = hr[:: scale[0], :: scale[1], :: scale[2]].copy()  # origin-aligned decimation
    return Case(subject, "train", lr, hr, hr * 0.5, 1.0, np.eye(4), np.diag([*scale, 1.0]), "", "")


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4), (2, 2, 1)])
def test_patches_are_aligned(rng, scale):
    case = make_case(rng, scale=scale)
    ds = PatchDataset([case], scale, patch_size=8, length=20, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        assert item["hr"].shape[1:] == (8, 8, 8)
        assert tuple(item["lr"].shape[1:]) == tuple(8 // s for s in scale)
        hr = item["hr"][0].numpy()
        lr = item["lr"][0].numpy()
        np.testing.assert_array_equal(lr, hr[:: scale[0], :: scale[1], :: scale[2]])
        np.testing.assert_array_equal(item["ref"][0].numpy(), hr * 0.5)


def test_draws_depend_on_seed_epoch_index_only(rng):
    case = make_case(rng)
    a = PatchDataset([case], (2, 2, 2), 8, 10, seed=1)
    b = PatchDataset([case], (2, 2, 2), 8, 10, seed=1)
    np.testing.assert_array_equal(a[5]["hr"], b[5]["hr"])
    b.set_epoch(1)
    assert not np.array_equal(a[5]["hr"], b[5]["hr"])


def test_foreground_fraction_biases_patches_to_the_brain(rng):
    shape = (64, 64, 64)
    hr = np.zeros(shape, np.float32)
    hr[24:40, 24:40, 24:40] = 1.0 + rng.random((16, 16, 16)).astype(np.float32)
    case = Case("s", "train", hr[::2, ::2, ::2].copy(), hr, None, 1.0, np.eye(4), np.eye(4), "", "")
    fg = PatchDataset([case], (2, 2, 2), 8, 200, seed=0, foreground_fraction=1.0)
    uniform = PatchDataset([case], (2, 2, 2), 8, 200, seed=0, foreground_fraction=0.0)
    frac = lambda ds: np.mean([float((ds[i]["hr"] > 0).float().mean()) for i in range(len(ds))])  # noqa: E731
    assert frac(fg) > 3 * frac(uniform)


def test_patch_shape_is_a_multiple_of_the_scale_and_fits():
    assert patch_shape((40, 48, 44), 32, (2, 2, 2)) == (32, 32, 32)
    assert patch_shape((40, 48, 20), 32, (1, 1, 4)) == (32, 32, 20)
    assert patch_shape((10, 48, 44), 32, (4, 2, 2)) == (8, 32, 32)


def test_robust_divisor_ignores_background(rng):
    vol = np.zeros((32, 32, 32), np.float32)
    vol[8:24, 8:24, 8:24] = 100 + rng.random((16, 16, 16)).astype(np.float32)
    assert 100 <= robust_divisor(vol) <= 101
