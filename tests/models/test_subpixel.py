from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crfm_bench.models.subpixel import pixel_shuffle, pixel_unshuffle, subpixel_stages


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_torch_in_2d(r: int) -> None:
    x = torch.randn(2, 3 * r * r, 5, 4)
    torch.testing.assert_close(pixel_shuffle(x, (r, r)), F.pixel_shuffle(x, r), rtol=0, atol=0)
    y = torch.randn(2, 3, 5 * r, 4 * r)
    torch.testing.assert_close(pixel_unshuffle(y, (r, r)), F.pixel_unshuffle(y, r), rtol=0, atol=0)


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4), (3, 1, 2)])
def test_unshuffle_inverts_shuffle_in_3d(factors: tuple[int, int, int]) -> None:
    x = torch.randn(2, 3, 6, 4, 8)
    down = pixel_unshuffle(x, factors)
    assert down.shape == (2, 3 * factors[0] * factors[1] * factors[2],
                          6 // factors[0], 4 // factors[1], 8 // factors[2])  # fmt: skip
    torch.testing.assert_close(pixel_shuffle(down, factors), x, rtol=0, atol=0)


def test_shuffle_places_offsets_along_the_right_axis() -> None:
    # two channels -> factor 2 along the last axis only: channel k fills voxels z = 2i + k
    x = torch.stack([torch.zeros(2, 2, 3), torch.ones(2, 2, 3)])[None]
    out = pixel_shuffle(x, (1, 1, 2))
    assert out.shape == (1, 1, 2, 2, 6)
    assert out[0, 0, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]


def test_subpixel_stages_split_into_prime_factors() -> None:
    assert subpixel_stages((4, 4, 4)) == [(2, 2, 2), (2, 2, 2)]
    assert subpixel_stages((1, 1, 4)) == [(1, 1, 2), (1, 1, 2)]
    assert subpixel_stages((3, 3)) == [(3, 3)]
    assert subpixel_stages((2, 6)) == [(2, 2), (1, 3)]
