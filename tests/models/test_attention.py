"""Windowed attention and FMP: window bookkeeping, locality, and memory linear in volume."""

from __future__ import annotations

import math

import pytest
import torch

from crfm_bench.models import create_model
from crfm_bench.models.attention import (
    CrossModalityAttention,
    CrossScaleAttention,
    attend,
    merge_windows,
    partition_windows,
    roll,
)
from crfm_bench.models.fmp import FMP
from crfm_bench.models.footprint import saved_tensor_bytes


@pytest.mark.parametrize(
    ("size", "window"), [((8, 12), (4, 3)), ((8, 4, 6), (4, 2, 3)), ((4, 4, 4), (4, 4, 4))]
)
def test_merge_inverts_partition(size: tuple[int, ...], window: tuple[int, ...]) -> None:
    x = torch.randn(2, 6, *size)
    parts = partition_windows(x, window, heads=2)
    n_windows = math.prod(s // w for s, w in zip(size, window, strict=True))
    assert parts.shape == (2, n_windows, 2, math.prod(window), 3)
    torch.testing.assert_close(merge_windows(parts, window, size), x, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("shape", "shifts", "dims", "channels_last"),
    [
        ((2, 3, 8, 6, 4), (-3, 2, 5), (2, 3, 4), False),
        ((2, 3, 8, 6, 4), (4, -4, 0), (2, 3, 4), True),
        ((1, 2, 5, 7), (-1, 9), (2, 3), False),
        ((2, 3, 4, 4, 4), (0, 0, 0), (2, 3, 4), False),
    ],
)
def test_roll_is_torch_roll_forward_and_backward(
    shape: tuple[int, ...], shifts: tuple[int, ...], dims: tuple[int, ...], channels_last: bool
) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = roll(a, shifts, dims), torch.roll(b, shifts, dims)
    assert torch.equal(ours, theirs)
    assert ours.is_contiguous(memory_format=torch.channels_last_3d) == channels_last
    grad = torch.randn(shape)
    ours.backward(grad)
    theirs.backward(grad)
    assert torch.equal(a.grad, b.grad)
    ours.sum().backward()  # a rolled copy, not a view: the input is untouched
    assert torch.equal(a.detach(), x)


@pytest.mark.parametrize("mask_kind", ["none", "additive", "bool"])
def test_plain_attention_is_the_fused_call_bit_for_bit(mask_kind: str) -> None:
    """The CPU path of ``attend`` and ``scaled_dot_product_attention`` (its other path) give
    the same outputs and gradients to the bit, with the geometry of a shifted window layer
    (query head size 8, value size 128, some keys masked, every row keeping one)."""
    torch.manual_seed(0)
    q, k, v = (
        torch.randn(2, 4, 1, 27, 8),
        torch.randn(2, 4, 1, 27, 8),
        torch.randn(2, 4, 1, 27, 128),
    )
    allowed = torch.rand(4, 1, 27, 27) > 0.4
    allowed[..., 0] = True
    mask = {
        "none": None,
        "bool": allowed,
        "additive": torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf")),
    }[mask_kind]
    grad = torch.randn(2, 4, 1, 27, 128)
    results = []
    for fused in (False, True):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = attend(*leaves, mask, 10.0, fused=fused)
        out.backward(grad)
        results.append([out, *(t.grad for t in leaves)])
    for plain, fused in zip(*results, strict=True):
        assert torch.equal(plain, fused)
    if mask is not None:  # the mask acts: a masked key's value does not reach its query
        probe = v.clone()
        probe[:, 0, 0, ~allowed[0, 0, 0]] += 100.0
        moved = attend(q, k, probe, mask, 10.0) - attend(q, k, v, mask, 10.0)
        assert moved[:, 0, 0, 0].abs().max() == 0


def test_a_window_only_sees_itself() -> None:
    attn = CrossScaleAttention(3, 8, (2, 2, 2), window=4).eval()
    x = torch.randn(1, 8, 8, 8, 8)
    y = x.clone()
    y[..., 4:, :, :] += torch.randn(1, 8, 4, 8, 8)  # change the second half along axis 0
    with torch.no_grad():
        a, b = attn(x), attn(y)  # on the HR grid: LR rows 0..3 are HR rows 0..7
    torch.testing.assert_close(a[..., :8, :, :], b[..., :8, :, :])  # first windows untouched
    assert (a[..., 8:, :, :] - b[..., 8:, :, :]).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("size", "scale"), [((5, 7, 3), (2, 2, 2)), ((9, 2), (2, 2)), ((3, 4, 5), (1, 1, 4))]
)
def test_odd_sizes_are_padded_and_cropped(size: tuple[int, ...], scale: tuple[int, ...]) -> None:
    hr = tuple(n * s for n, s in zip(size, scale, strict=True))
    x = torch.randn(1, 4, *size)
    for shift in (False, True):
        a = CrossScaleAttention(len(size), 4, scale, window=4)(x, shift=shift)
        b = CrossModalityAttention(len(size), 4, scale, window=4)(
            x, torch.randn(1, 4, *hr), shift=shift
        )
        assert a.shape == b.shape == (1, 4, *hr)
        assert torch.isfinite(a).all() and torch.isfinite(b).all()


def _fmp_bytes(fmp: FMP, size: tuple[int, ...]) -> int:
    x = torch.randn(1, 8, *size)
    ref = torch.randn(1, 8, *(2 * n for n in size))
    return saved_tensor_bytes(lambda: fmp(x, ref))


def test_windowed_fmp_memory_is_linear_in_the_volume() -> None:
    # Doubling the volume must roughly double what autograd keeps for backward.
    fmp = FMP(3, 8, (2, 2, 2), window=4, shift=True)
    small, large = _fmp_bytes(fmp, (8, 8, 8)), _fmp_bytes(fmp, (8, 8, 16))
    assert 1.8 < large / small < 2.2, (small, large)
    # The same accounting exposes global attention (one window over the volume) as quadratic.
    global_fmp = FMP(3, 8, (2, 2, 2), window=64)
    small, large = _fmp_bytes(global_fmp, (8, 8, 8)), _fmp_bytes(global_fmp, (8, 8, 16))
    assert large / small > 2.6, (small, large)


def test_crfm_activation_memory_is_linear_in_the_volume() -> None:
    model = create_model("crfm", spatial_dims=3, scale=2)

    def run(lr_size: tuple[int, ...]) -> int:
        lr = torch.rand(1, 1, *lr_size)
        ref = torch.rand(1, 1, *(2 * n for n in lr_size))
        return saved_tensor_bytes(lambda: model(lr, ref))

    ratio = run((16, 16, 16)) / run((16, 16, 8))
    assert 1.8 < ratio < 2.2, ratio


def test_fmp_plugs_into_edsr_and_uses_both_attentions() -> None:
    model = create_model("edsr-fmp", spatial_dims=3, scale=2)
    assert model.needs_reference
    assert len(model.fmp) == 2
    assert all(f.cross_modality is not None and f.cross_scale is not None for f in model.fmp)
    assert [f.shift for f in model.fmp] == [False, True]
