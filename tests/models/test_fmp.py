"""FMP semantics, each checked with a constructed input.

Cross-scale output on the finer grid, zero back-projected error for a perfect up/down pair,
no attention weight on padded keys, information crossing a window border through shifted
windows, and the one-call windowed attention equal to a plain dense computation.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from crfm_bench.models.attention import (
    CrossModalityAttention,
    CrossScaleAttention,
    plan_windows,
    shift_of,
    window_attention,
    window_mask,
    window_mask_bool,
)
from crfm_bench.models.fmp import FMP, BackProjection


def _identity_embedding(seq: nn.Sequential) -> None:
    """Make a 1x1 conv + PReLU embedding the identity (square conv, PReLU slope 1)."""
    conv, act = seq[0], seq[1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(conv.weight.shape[0]):
            conv.weight[(c, c, *(0,) * (conv.weight.ndim - 2))] = 1.0
        act.weight.fill_(1.0)


def _zero_embedding(seq: nn.Sequential) -> None:
    with torch.no_grad():
        seq[0].weight.zero_()
        seq[0].bias.zero_()


@pytest.mark.parametrize(
    ("scale", "lr"), [((2, 2), (6, 8)), ((2, 2, 2), (4, 6, 4)), ((1, 1, 4), (4, 4, 8))]
)
def test_cross_scale_output_lies_on_the_finer_grid_with_finer_detail(
    scale: tuple[int, ...], lr: tuple[int, ...]
) -> None:
    # Features with a pattern of period s (one value per offset inside an s-cell): every
    # coarse key's value is the same s-block, so with uniform attention each query voxel
    # must receive exactly that block, i.e. the pattern appears at the finer spacing.
    nd, c = len(scale), 2
    attn = CrossScaleAttention(nd, c, scale, window=4).eval()
    _zero_embedding(attn.match_q)  # all logits equal: uniform attention
    _zero_embedding(attn.match_k)
    _identity_embedding(attn.assembly)
    block = torch.rand(1, c, *scale) + 0.5
    x = block.repeat(1, 1, *(n // s for n, s in zip(lr, scale, strict=True)))  # s-periodic
    with torch.no_grad():
        out = attn(x)
    hr = tuple(n * s for n, s in zip(lr, scale, strict=True))
    assert out.shape == (1, c, *hr)
    # the finer grid holds an s-periodic copy of the block (the detail of one s-cell of x)
    expect = block.repeat(1, 1, *lr)
    torch.testing.assert_close(out, expect[(slice(None), slice(None), *(slice(0, n) for n in hr))])


def test_cross_modality_output_lies_on_the_hr_grid_and_keeps_hr_detail() -> None:
    # One reference HR voxel per window differs; with uniform attention the difference
    # shows at HR positions of the same offset inside their cells, not smeared over cells.
    attn = CrossModalityAttention(3, 2, (2, 2, 2), window=4).eval()
    _zero_embedding(attn.match_q)
    _zero_embedding(attn.match_k)
    _identity_embedding(attn.assembly)
    x = torch.rand(1, 2, 4, 4, 4)
    ref = torch.zeros(1, 2, 8, 8, 8)
    ref[..., 0, 1, 1] = 64.0  # HR voxel at offset (0, 1, 1) of LR cell (0, 0, 0)
    with torch.no_grad():
        out = attn(x, ref)
    assert out.shape == (1, 2, 8, 8, 8)
    # uniform over the 64 keys of the window: 1.0 at offset (0, 1, 1) of every cell
    torch.testing.assert_close(out[..., 0::2, 1::2, 1::2], torch.ones(1, 2, 4, 4, 4))
    assert out[..., 1::2, :, :].abs().max() == 0 and out[..., 0::2, 0::2, :].abs().max() == 0


def _projection_pair(bp: BackProjection, scale: tuple[int, ...]) -> None:
    """down = mean over each s-cell, up = replication: down(up(x)) == x exactly."""
    n = math.prod(scale)
    with torch.no_grad():
        for seq, value in ((bp.down[0], 1.0 / n), (bp.up[0], 1.0)):
            conv, act = seq[0], seq[1]
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(conv.weight.shape[0]):
                conv.weight[c, c] = value
            act.weight.fill_(1.0)


@pytest.mark.parametrize("scale", [(2, 2), (2, 2, 2), (1, 1, 4)])
def test_a_perfect_up_down_pair_leaves_zero_back_projected_error(scale: tuple[int, ...]) -> None:
    nd = len(scale)
    bp = BackProjection(nd, 3, scale)
    _projection_pair(bp, scale)
    x = torch.randn(2, 3, *(4,) * nd)
    h = x
    for axis, s in enumerate(scale):
        h = h.repeat_interleave(s, dim=2 + axis)  # the HR estimate consistent with x
    with torch.no_grad():
        out, err = bp(x, h)
    torch.testing.assert_close(err, torch.zeros_like(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(out, h, rtol=0, atol=1e-6)
    # control: an inconsistent estimate gives a non-zero error that is fed back
    with torch.no_grad():
        out, err = bp(x, h + 1.0)
    torch.testing.assert_close(err, -torch.ones_like(x))
    torch.testing.assert_close(out, h)  # the error feedback removes the offset exactly


def test_a_padded_key_never_receives_attention_weight() -> None:
    # Grid of 5 in windows of 6: position 5 is padding. Make the padded key match every
    # query best and give it a huge value: with the mask, no output and no gradient sees it.
    win, padded = plan_windows((5,), 8, (2,))
    assert (win, padded) == ((6,), (6,))
    mask = window_mask(padded, win, (5,), (1,), (0,))
    assert mask is not None
    q = torch.ones(1, 2, 6)
    k = torch.zeros(1, 2, 6)
    k[..., 5] = 100.0
    v = torch.rand(1, 3, 6)
    v[..., 5] = 1e6
    v.requires_grad_(True)
    out = window_attention(q, k, v, win, (1,), 1, mask, 1.0)
    assert out.abs().max() < 1.0  # the 1e6 value contributes nothing
    out.sum().backward()
    assert v.grad is not None
    assert (v.grad[..., 5] == 0).all() and (v.grad[..., :5] != 0).all()
    # Without the mask the padded key would dominate: the test input can fail.
    loud = window_attention(q, k, v.detach(), win, (1,), 1, None, 1.0)
    assert loud.abs().max() > 1e5


def test_a_padded_coarse_key_gets_no_weight_in_cross_scale_attention() -> None:
    # LR grid of 5 at x2: coarse cells 0..2 hold real voxels, the padded cells none.
    attn = CrossScaleAttention(2, 2, (2, 2), window=8)
    x = torch.rand(1, 2, 5, 5, requires_grad=True)
    out = attn(x, shift=True)
    assert out.shape == (1, 2, 10, 10) and torch.isfinite(out).all()
    win, padded = plan_windows((5, 5), 8, (2, 2))
    mask = window_mask_bool(padded, win, (3, 3), (2, 2), shift_of(win, (2, 2)))
    assert mask is not None and mask.any(-1).all()  # every query sees a real key


@pytest.mark.parametrize("cls", [CrossScaleAttention, CrossModalityAttention])
def test_a_shifted_window_lets_information_cross_a_window_border(cls: type) -> None:
    # Grid 12 with windows of 6: voxel 5 (end of window 0) and voxel 6 (start of window 1).
    torch.manual_seed(0)
    attn = cls(2, 4, (2, 2), window=6).eval()
    x = torch.rand(1, 4, 12, 12)
    ref = torch.rand(1, 4, 24, 24)
    y = x.clone()
    ref_y = ref.clone()
    y[..., 6:8, :] += 1.0  # change only window 1 (its first coarse cell) along axis 0
    ref_y[..., 12:16, :] += 1.0

    def run(inp: torch.Tensor, r: torch.Tensor, shift: bool) -> torch.Tensor:
        with torch.no_grad():
            return (
                attn(inp, shift=shift) if cls is CrossScaleAttention else attn(inp, r, shift=shift)
            )

    # HR rows 8..11 = LR rows 4..5, the last rows of window 0
    unshifted = run(x, ref, False)[..., 8:12, :] - run(y, ref_y, False)[..., 8:12, :]
    shifted = run(x, ref, True)[..., 8:12, :] - run(y, ref_y, True)[..., 8:12, :]
    assert unshifted.abs().max() == 0  # a plain window is blind past its border
    assert shifted.abs().max() > 1e-4  # the shifted one sees across it


def _dense_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    win: tuple[int, ...],
    ratio: tuple[int, ...],
    heads: int,
    valid_k: tuple[int, ...],
    shift: tuple[int, ...],
    scale: float,
) -> torch.Tensor:
    """Plain attention over all voxel pairs, allowed iff the pair shares a (shifted) window
    and a Swin region and the key is real; explicit softmax, per head, no partitioning."""
    b, e, *pq = q.shape
    pk = [p // r for p, r in zip(pq, ratio, strict=True)]
    wk = [w // r for w, r in zip(win, ratio, strict=True)]
    qpos = list(itertools.product(*(range(n) for n in pq)))
    kpos = list(itertools.product(*(range(n) for n in pk)))

    def label(pos: tuple[int, ...], size: list[int], w: list[int], sh: list[int]) -> tuple:
        out = []
        for o, n, ww, s in zip(pos, size, w, sh, strict=True):
            rolled = (o - s) % n  # index after rolling the grid by -s
            out.append((rolled // ww, rolled + s >= n))
        return tuple(out)

    sk = [s // r for s, r in zip(shift, ratio, strict=True)]
    ql = [label(p, list(pq), list(win), list(shift)) for p in qpos]
    kl = [label(p, pk, wk, sk) for p in kpos]
    kvalid = torch.tensor([all(o < v for o, v in zip(p, valid_k, strict=True)) for p in kpos])
    allowed = torch.tensor([[a == c for c in kl] for a in ql]) & kvalid[None, :]
    qf, kf, vf = q.flatten(2), k.flatten(2), v.flatten(2)
    eh, vh = e // heads, v.shape[1] // heads
    out = []
    for h in range(heads):
        qs = qf[:, h * eh : (h + 1) * eh].transpose(1, 2)
        ks = kf[:, h * eh : (h + 1) * eh]
        vs = vf[:, h * vh : (h + 1) * vh].transpose(1, 2)
        logits = (qs @ ks) * scale
        logits = logits.masked_fill(~allowed, float("-inf"))
        out.append((torch.softmax(logits, -1) @ vs).transpose(1, 2))
    return torch.cat(out, 1).reshape(b, v.shape[1], *pq)


@pytest.mark.parametrize(
    ("size", "window", "ratio", "shifted", "heads"),
    [
        ((10, 7), 4, (2, 1), True, 2),
        ((5, 6, 3), 4, (1, 2, 1), False, 1),
        ((6, 6, 5), 4, (2, 2, 1), True, 2),
        ((8, 8), 4, (1, 1), True, 1),
    ],
)
def test_fast_window_attention_equals_a_plain_dense_computation(
    size: tuple[int, ...], window: int, ratio: tuple[int, ...], shifted: bool, heads: int
) -> None:
    win, padded = plan_windows(size, window, ratio)
    valid_k = tuple(math.ceil(n / r) for n, r in zip(size, ratio, strict=True))
    shift = shift_of(win, ratio) if shifted else (0,) * len(size)
    pk = tuple(p // r for p, r in zip(padded, ratio, strict=True))
    q = torch.randn(2, 4, *padded, dtype=torch.float64)
    k = torch.randn(2, 4, *pk, dtype=torch.float64)
    v = torch.randn(2, 6, *pk, dtype=torch.float64)
    mask = window_mask(padded, win, valid_k, ratio, shift)
    fast = window_attention(q, k, v, win, ratio, heads, mask, 0.7, shift)
    plain = _dense_reference(q, k, v, win, ratio, heads, valid_k, shift, 0.7)
    real = (slice(None), slice(None), *(slice(0, n) for n in size))  # padded queries: cropped
    torch.testing.assert_close(fast[real], plain[real])


def test_window_plan_fits_the_training_patch_without_padding() -> None:
    assert plan_windows((12, 12, 12), 8, (2, 2, 2)) == ((6, 6, 6), (12, 12, 12))
    assert plan_windows((24, 24, 6), 8, (1, 1, 4)) == ((8, 8, 8), (24, 24, 8))
    assert plan_windows((16,), 8) == ((8,), (16,))


@pytest.mark.parametrize(
    ("scale", "lr", "heads"),
    [((2, 2), (7, 6), 2), ((2, 2, 2), (5, 6, 4), 1), ((1, 1, 4), (4, 5, 3), 2)],
)
@pytest.mark.parametrize("shift", [False, True])
def test_fmp_keeps_the_trunk_grid_and_trains(
    scale: tuple[int, ...], lr: tuple[int, ...], heads: int, shift: bool
) -> None:
    nd = len(scale)
    fmp = FMP(nd, 8, scale, window=4, heads=heads, shift=shift)
    x = torch.randn(2, 8, *lr, requires_grad=True)
    ref = torch.randn(2, 8, *(n * s for n, s in zip(lr, scale, strict=True)))
    out = fmp(x, ref)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fmp.parameters())
    a, b = fmp.estimates(x, ref)
    hr = tuple(n * s for n, s in zip(lr, scale, strict=True))
    assert a is not None and b is not None and a.shape[2:] == hr == b.shape[2:]


def test_fmp_without_reference_needs_none_and_with_it_uses_it() -> None:
    torch.manual_seed(0)
    xs = FMP(3, 8, (2, 2, 2), window=4, cross_modality=False).eval()
    x = torch.randn(1, 8, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(xs(x), xs(x, torch.randn(1, 8, 8, 8, 8)))
    both = FMP(3, 8, (2, 2, 2), window=4).eval()
    with pytest.raises(ValueError, match="needs reference"):
        both(x)
    with torch.no_grad():
        a, b = both(x, torch.randn(1, 8, 8, 8, 8)), both(x, torch.randn(1, 8, 8, 8, 8))
    assert (a - b).abs().max() > 1e-5
