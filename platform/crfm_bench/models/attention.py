r"""Windowed attention for 2D and 3D feature maps, and the two attentions of FMP.

Global attention over a 3D volume needs memory quadratic in the number of voxels (a 16^3
grid already gives a 4096 x 4096 matrix). Here the grid is cut into non-overlapping
windows (Swin-style local windows: Liu et al., ICCV 2021) and each window attends only
within itself, so memory is ``O(voxels * window^d)``: linear in the volume.

The fast path (:func:`window_attention`) is *one* attention call (:func:`attend`:
``torch.nn.functional.scaled_dot_product_attention`` off the CPU, the same arithmetic
written out on it) over all windows and heads of a batch: windows are cut out by
``reshape``/``permute`` (no Python loop over windows or heads). Three rules make it the
same at training and test time:

* **window plan** (:func:`plan_windows`): on an axis of length ``S`` the nominal window
  ``w`` becomes ``n = ceil(S / w)`` windows of ``ceil(S / n)`` voxels (rounded up to the
  axis' scale factor), so a 12^3 training patch gets 2^3 windows of 6^3 and no padding,
  and padding, where needed, is less than one voxel per window and axis;
* **masked padding**: padded keys get a ``False`` mask entry (an ``-inf`` logit), so they
  never receive attention weight (no replicated copies of edge voxels);
* **shifted windows** (``shift=True``, alternate FMPs): a cyclic shift by half a window
  (rounded down to the scale factor) with Swin's region mask, so information crosses the
  window borders of the unshifted layer while no window mixes the two ends of the volume.

:class:`CrossScaleAttention` follows CSNLN's ``CrossScaleAttention`` (Mei et al., CVPR
2020, SHI-Labs/Cross-Scale-Non-Local-Attention ``src/model/attention.py``): queries on the
feature grid, keys from a copy downscaled by the scale ``s``, values the matching
``s``-times larger patches of the un-downscaled features, pasted onto an ``s``-times finer
grid. :class:`CrossModalityAttention` is the same pattern with the reference: keys from
the HR reference features folded onto the LR grid, values their full-resolution ``s``
blocks, so the result also lands on the HR grid. Our reconstruction choices (and why):
key patches of one voxel instead of CSNLN's 3x3 (a 3^3 patch per key would multiply the 3D
cost by 27; the 1x1 embeddings see the 3x3 convolution context of the trunk), average
pooling for the downscaled copy (CSNLN: bilinear; identical in intent, and it can ignore
padding exactly), windows instead of global matching (memory), per-axis scales.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crfm_bench.models.conv import conv_nd

# CSNLN's softmax_scale: logits are 10 * <query, unit-norm key>.
SOFTMAX_SCALE = 10.0


def plan_windows(
    size: Sequence[int], window: int, multiple: Sequence[int] | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Window and padded grid per axis for a grid ``size`` and a nominal ``window``.

    On each axis: ``n = ceil(S / w0)`` windows with ``w0 = window`` rounded up to
    ``multiple`` (the scale factor, so windows map onto whole cells of the coarse grid),
    each of ``ceil(S / n)`` voxels rounded up to ``multiple``. Returns ``(win, padded)``
    with ``padded = n * win``. ``plan_windows((12,), 8)`` -> ``((6,), (12,))``.
    """
    multiple = tuple(multiple) if multiple is not None else (1,) * len(size)
    win, padded = [], []
    for s, m in zip(size, multiple, strict=True):
        w0 = math.ceil(max(window, m) / m) * m
        n = math.ceil(s / w0)
        w = math.ceil(math.ceil(s / n) / m) * m
        win.append(w)
        padded.append(n * w)
    return tuple(win), tuple(padded)


def shift_of(win: Sequence[int], multiple: Sequence[int]) -> tuple[int, ...]:
    """Cyclic shift per axis of a shifted window layer: half a window, down to ``multiple``."""
    return tuple((w // 2) // m * m for w, m in zip(win, multiple, strict=True))


def partition_windows(
    x: torch.Tensor, window: Sequence[int], heads: int, block: Sequence[int] | None = None
) -> torch.Tensor:
    """Windows of ``block``-cells as tokens, in one copy.

    (B, C, *S) with ``S_i = n_i * w_i * b_i`` -> (B, prod(n), heads, prod(w),
    prod(b) * C / heads): ``n`` windows of ``w`` tokens per axis, each token the ``b``-cell
    of ``C / heads`` channels, features ordered (offset in the cell, channel). ``block``
    defaults to 1 (one voxel per token). Channels stay innermost (the channels-last order),
    so the copy moves contiguous runs of channels, and with a channels-last ``x`` the
    permutation before it is free; the space-to-depth of the values is fused into the
    same copy.
    """
    b, c, *size = x.shape
    nd = len(size)
    block = tuple(block) if block is not None else (1,) * nd
    split: list[int] = []
    counts = []
    for s, w, f in zip(size, window, block, strict=True):
        counts.append(s // (w * f))
        split += [counts[-1], w, f]
    x = x.permute(0, *range(2, nd + 2), 1).reshape(b, *split, heads, c // heads)
    n_axes = [1 + 3 * i for i in range(nd)]
    w_axes = [2 + 3 * i for i in range(nd)]
    f_axes = [3 + 3 * i for i in range(nd)]
    x = x.permute(0, *n_axes, 3 * nd + 1, *w_axes, *f_axes, 3 * nd + 2)
    return x.reshape(b, math.prod(counts), heads, math.prod(window), -1)


def merge_windows(
    t: torch.Tensor,
    window: Sequence[int],
    size: Sequence[int],
    block: Sequence[int] | None = None,
) -> torch.Tensor:
    """Inverse of :func:`partition_windows`: (B, nW, heads, prod(w), prod(b) * ch) ->
    (B, heads * ch, *size) with ``size = n * w * b``, returned in the channels-last memory
    layout (a permuted view of one contiguous copy)."""
    nd = len(size)
    block = tuple(block) if block is not None else (1,) * nd
    batch, _, heads, _, feat = t.shape
    ch = feat // math.prod(block)
    counts = [s // (w * f) for s, w, f in zip(size, window, block, strict=True)]
    t = t.reshape(batch, *counts, heads, *window, *block, ch)
    # axes: 0 batch, 1..nd counts, nd+1 heads, nd+2..2nd+1 window,
    # 2nd+2..3nd+1 block offsets, 3nd+2 channels
    perm = [0]
    for i in range(nd):
        perm += [1 + i, nd + 2 + i, 2 * nd + 2 + i]
    perm += [nd + 1, 3 * nd + 2]
    out = t.permute(perm).reshape(batch, *size, heads * ch)
    return out.permute(0, nd + 1, *range(1, nd + 1))


def roll(x: torch.Tensor, shifts: Sequence[int], dims: Sequence[int]) -> torch.Tensor:
    """``torch.roll(x, shifts, dims)`` in one copy, forward and backward.

    ATen's CPU roll rolls one axis at a time, each a ``cat`` of two slices: a 3D roll
    moves the tensor three times, and its backward three times more (9 % of an ``edsr-fmp``
    step's CPU time under the profiler; about 3 % of its wall time measured without). Here
    every one of the ``2^d`` wrapped blocks is copied
    once into its place. Pure data movement, so the result is bit-identical to
    ``torch.roll`` (``tests/models/test_attention.py``); the memory format of ``x`` is kept.
    """
    return _Roll.apply(x, tuple(int(s) for s in shifts), tuple(int(d) for d in dims))


def _roll_copy(x: torch.Tensor, shifts: tuple[int, ...], dims: tuple[int, ...]) -> torch.Tensor:
    pieces = []  # per rolled axis: (destination, source) slices; out[(i + s) % n] = x[i]
    for shift, dim in zip(shifts, dims, strict=True):
        n = x.shape[dim]
        s = shift % n if n else 0
        pieces.append(
            [(slice(s, n), slice(0, n - s)), (slice(0, s), slice(n - s, n))]
            if s
            else [(slice(None), slice(None))]
        )
    if all(len(p) == 1 for p in pieces):
        return x.clone()
    out = torch.empty_like(x)
    for combo in itertools.product(*pieces):
        dst: list[slice] = [slice(None)] * x.ndim
        src: list[slice] = [slice(None)] * x.ndim
        for dim, (d, s) in zip(dims, combo, strict=True):
            dst[dim], src[dim] = d, s
        out[tuple(dst)].copy_(x[tuple(src)])
    return out


class _Roll(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, shifts: tuple[int, ...], dims: tuple[int, ...]
    ) -> torch.Tensor:
        ctx.shifts, ctx.dims = shifts, dims
        return _roll_copy(x, shifts, dims)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return _roll_copy(grad, tuple(-s for s in ctx.shifts), ctx.dims), None, None


def _axis_labels(padded: int, valid: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position of a (cyclically shifted) padded axis: is it a real voxel, and is it
    one that wrapped around from the front (Swin's region label)."""
    i = torch.arange(padded)
    src = i + shift
    return (src % padded) < valid, src >= padded


def window_mask(
    padded_q: Sequence[int],
    win_q: Sequence[int],
    valid_k: Sequence[int],
    ratio: Sequence[int],
    shift: Sequence[int],
) -> torch.Tensor | None:
    """Additive attention mask of :func:`window_attention` (0 = may attend, ``-inf`` = may
    not), or None if every key is allowed. Cached per geometry (it depends on shapes only);
    the boolean form is :func:`window_mask_bool`."""
    return _cached_mask(
        *(tuple(int(n) for n in a) for a in (padded_q, win_q, valid_k, ratio, shift))
    )


@functools.lru_cache(maxsize=64)
def _cached_mask(
    padded_q: tuple[int, ...],
    win_q: tuple[int, ...],
    valid_k: tuple[int, ...],
    ratio: tuple[int, ...],
    shift: tuple[int, ...],
) -> torch.Tensor | None:
    allowed = window_mask_bool(padded_q, win_q, valid_k, ratio, shift)
    if allowed is None:
        return None
    return torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))


def window_mask_bool(
    padded_q: Sequence[int],
    win_q: Sequence[int],
    valid_k: Sequence[int],
    ratio: Sequence[int],
    shift: Sequence[int],
) -> torch.Tensor | None:
    """Boolean attention mask of :func:`window_attention` (True = may attend), or None.

    ``padded_q``/``win_q``: padded query grid and window; keys live on the grid
    ``padded_q / ratio`` with windows ``win_q / ratio``; the first ``valid_k`` key positions
    per axis are real. ``shift``: cyclic shift of the query grid (a multiple of ``ratio``).
    Shape ``(nW, 1, 1, Lk)`` (padding only) or ``(nW, 1, Lq, Lk)`` (shifted).
    A real query always has at least one allowed key: the cell it lies in.
    """
    padded_k = [p // r for p, r in zip(padded_q, ratio, strict=True)]
    win_k = [w // r for w, r in zip(win_q, ratio, strict=True)]
    shift_k = [s // r for s, r in zip(shift, ratio, strict=True)]
    needs_pad = any(v < p for v, p in zip(valid_k, padded_k, strict=True))
    shifted = any(shift)
    if not (needs_pad or shifted):
        return None
    nd = len(padded_q)
    valid = torch.ones((), dtype=torch.bool)
    region_k = torch.zeros((), dtype=torch.long)
    region_q = torch.zeros((), dtype=torch.long)
    for axis in range(nd):
        view = [1] * nd
        view[axis] = -1
        ok, wrapped_k = _axis_labels(padded_k[axis], valid_k[axis], shift_k[axis])
        _, wrapped_q = _axis_labels(padded_q[axis], padded_q[axis], shift[axis])
        valid = valid & ok.view(view)
        region_k = region_k * 2 + wrapped_k.long().view(view)
        region_q = region_q * 2 + wrapped_q.long().view(view)
    valid_w = partition_windows(valid.expand(padded_k)[None, None].float(), win_k, 1)
    mask = valid_w[:, :, 0, :, 0].bool()[0]  # (nW, Lk)
    if not shifted:
        return _no_empty_rows(mask[:, None, None, :])
    rk = partition_windows(region_k.expand(padded_k)[None, None].float(), win_k, 1)[0, :, 0, :, 0]
    rq = partition_windows(region_q.expand(padded_q)[None, None].float(), win_q, 1)[0, :, 0, :, 0]
    same = rq[:, :, None] == rk[:, None, :]  # (nW, Lq, Lk)
    return _no_empty_rows((same & mask[:, None, :])[:, None])


def _no_empty_rows(mask: torch.Tensor) -> torch.Tensor:
    """A query row without any allowed key can only be a padded query (a real query always
    sees its own cell); let it see its whole window so the softmax stays finite. Its
    output is cropped away, so no real voxel ever attends to a padded key."""
    return mask | ~mask.any(-1, keepdim=True)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    fused: bool | None = None,
) -> torch.Tensor:
    """``softmax(scale * q k^T + mask) v`` over the last two axes.

    ``fused`` (default: on any device but the CPU) calls
    ``scaled_dot_product_attention``, whose fused GPU kernels take a value size different
    from the query size. On the CPU that call always falls back to its math path here
    (query head size 8, value size 128 at ``tiny``), and that path's softmax checks every
    row for all ``-inf`` (an ``all`` and a ``where`` over the whole logits). The plain path
    is the same arithmetic in the same order (``q`` and ``k`` each scaled by ``sqrt(scale)``,
    the mask added in place, softmax, matmul) without that check: our masks leave every
    row a key (:func:`_no_empty_rows`). Bit-identical to the call on this machine's CPU
    kernels, tested; 20.7 -> 16.2 ms forward + backward for a shifted window layer of
    ``crfm`` tiny.
    """
    if fused is None:
        fused = q.device.type != "cpu"
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    root = math.sqrt(scale)
    logits = torch.matmul(q * root, k.transpose(-2, -1) * root)
    if mask is not None:
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits.add_(mask)
    return torch.matmul(torch.softmax(logits, -1), v)


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    win: Sequence[int],
    ratio: Sequence[int],
    heads: int,
    mask: torch.Tensor | None,
    scale: float,
    shift: Sequence[int] = (),
    block: Sequence[int] | None = None,
) -> torch.Tensor:
    """Attention inside windows as one :func:`attend` call.

    ``q`` (B, E, *P) on a padded grid ``P`` (a multiple of ``win``); ``k`` (B, E, *P/ratio)
    on the key grid (windows ``win / ratio``); ``v`` (B, Cv, *(P/ratio * block)): each key
    token's value is the ``block``-cell of ``v`` at its place (default 1 voxel). ``mask``
    from :func:`window_mask`; ``shift`` (multiples of ``ratio``) rolls the grids before
    windowing and the output back. Returns (B, Cv, *(P * block)): every query token
    receives a ``block``-cell, so with ``block = s`` the output lies on the ``s``-times
    finer grid.
    """
    nd = q.ndim - 2
    block = tuple(block) if block is not None else (1,) * nd
    size = tuple(q.shape[2:])
    win_k = tuple(w // r for w, r in zip(win, ratio, strict=True))
    dims = tuple(range(2, q.ndim))
    shifted = bool(shift) and any(shift)
    if shifted:
        shift_k = tuple(s // r for s, r in zip(shift, ratio, strict=True))
        q = roll(q, tuple(-s for s in shift), dims)
        k = roll(k, tuple(-s for s in shift_k), dims)
        v = roll(v, tuple(-s * b for s, b in zip(shift_k, block, strict=True)), dims)
    if mask is not None:
        mask = mask.to(device=q.device, dtype=mask.dtype if mask.dtype == torch.bool else q.dtype)
    out = attend(
        partition_windows(q, win, heads),
        partition_windows(k, win_k, heads),
        partition_windows(v, win_k, heads, block),
        mask,
        scale,
    )
    out_size = tuple(n * b for n, b in zip(size, block, strict=True))
    out = merge_windows(out, win, out_size, block)
    if shifted:
        out = roll(out, tuple(s * b for s, b in zip(shift, block, strict=True)), dims)
    return out


def _embed(spatial_dims: int, in_ch: int, out_ch: int) -> nn.Sequential:
    """CSNLN's ``BasicBlock(conv, in, out, 1, act=PReLU)``: 1x1 conv then PReLU."""
    return nn.Sequential(conv_nd(spatial_dims, in_ch, out_ch, 1), nn.PReLU())


def _unit_norm(t: torch.Tensor) -> torch.Tensor:
    """CSNLN normalises every key patch to unit L2 norm (floor 1e-4)."""
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-4)


def _pad_to(t: torch.Tensor, padded: Sequence[int]) -> torch.Tensor:
    pad: list[int] = []
    for s, p in zip(reversed(t.shape[2:]), reversed(tuple(padded)), strict=True):
        pad += [0, p - s]
    return F.pad(t, pad) if any(pad) else t


def masked_avg_pool(x: torch.Tensor, valid: Sequence[int], factor: Sequence[int]) -> torch.Tensor:
    """Average of the real voxels of each ``factor`` cell of a zero-padded ``x``.

    ``x`` (B, C, *P) holds real voxels in its first ``valid`` positions per axis (the rest
    is padding); ``P`` is a multiple of ``factor``. Cells without a real voxel give 0.
    """
    if all(f == 1 for f in factor):
        return x
    pool = F.avg_pool2d if len(factor) == 2 else F.avg_pool3d
    kernel = tuple(factor)
    if tuple(valid) == tuple(x.shape[2:]):
        return pool(x, kernel, kernel)
    ones = _pad_to(x.new_ones(1, 1, *valid), x.shape[2:])
    return pool(x, kernel, kernel) / pool(ones, kernel, kernel).clamp_min(1e-6)


class CrossScaleAttention(nn.Module):
    """CSNLN cross-scale attention, windowed: (B, C, *S) -> (B, C, *(S * scale)).

    Queries ``match_q(x)`` on the grid ``S``; keys ``match_k(avgpool_s(x))`` (unit norm) on
    the coarse grid ``S / s``; values ``pixel_unshuffle(assembly(x), s)``: for each coarse
    position the ``s``-block of the un-downscaled features at the same place. Each query
    voxel receives an ``s``-block, so the output lies on the ``s``-times finer grid: detail
    that a coarser copy of the image shares with the query is pasted in at the finer scale.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        scale: Sequence[int],
        window: int = 8,
        heads: int = 1,
        reduction: int = 2,
    ) -> None:
        super().__init__()
        self.scale, self.window, self.heads = tuple(scale), window, heads
        emb = max(heads, channels // reduction)
        self.match_q = _embed(spatial_dims, channels, emb)
        self.match_k = _embed(spatial_dims, channels, emb)
        self.assembly = _embed(spatial_dims, channels, channels)

    def forward(self, x: torch.Tensor, shift: bool = False) -> torch.Tensor:
        size = tuple(x.shape[2:])
        win, padded = plan_windows(size, self.window, self.scale)
        coarse_valid = [-(-n // s) for n, s in zip(size, self.scale, strict=True)]
        shifts = shift_of(win, self.scale) if shift else ()
        mask = window_mask(padded, win, coarse_valid, self.scale, shifts or (0,) * len(size))
        q = _pad_to(self.match_q(x), padded)
        k = _unit_norm(self.match_k(masked_avg_pool(_pad_to(x, padded), size, self.scale)))
        v = _pad_to(self.assembly(x), padded)  # values: s-cells of the LR-grid features
        out = window_attention(
            q, k, v, win, self.scale, self.heads, mask, SOFTMAX_SCALE, shifts, self.scale
        )  # (B, C, *(padded * s))
        hr = (n * s for n, s in zip(size, self.scale, strict=True))
        return out[(slice(None), slice(None), *(slice(0, n) for n in hr))]

    def extra_repr(self) -> str:
        return f"scale={self.scale}, window={self.window}, heads={self.heads}"


class CrossModalityAttention(nn.Module):
    """Target-to-reference attention, windowed: ``x`` (B, C, *S), ``ref`` (B, C, *(S*s))
    -> (B, C, *(S * s)).

    Queries ``match_q(x)`` on the LR grid; keys ``match_k(ref)``, a 1x1 conv of
    ``pixel_unshuffle(ref, s)`` (written as the equivalent strided conv): each LR position
    described by all HR reference voxels of its cell (nothing averaged away); values
    ``assembly(ref)`` taken as whole ``s``-cells: the full-resolution blocks. The
    output is the attended HR reference blocks on the HR grid.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        scale: Sequence[int],
        window: int = 8,
        heads: int = 1,
        reduction: int = 2,
    ) -> None:
        super().__init__()
        self.scale, self.window, self.heads = tuple(scale), window, heads
        emb = max(heads, channels // reduction)
        self.match_q = _embed(spatial_dims, channels, emb)
        # a 1x1 conv of the space-to-depth of the reference, written as the equivalent
        # strided conv (kernel = stride = s): same weights, no copy
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.match_k = nn.Sequential(conv(channels, emb, self.scale, stride=self.scale), nn.PReLU())
        self.assembly = _embed(spatial_dims, channels, channels)

    def forward(self, x: torch.Tensor, ref: torch.Tensor, shift: bool = False) -> torch.Tensor:
        size = tuple(x.shape[2:])
        ones = (1,) * len(size)
        win, padded = plan_windows(size, self.window, self.scale)
        shifts = shift_of(win, self.scale) if shift else ()
        mask = window_mask(padded, win, size, ones, shifts or (0,) * len(size))
        q = _pad_to(self.match_q(x), padded)
        k = _pad_to(_unit_norm(self.match_k(ref)), padded)
        hr_padded = tuple(p * s for p, s in zip(padded, self.scale, strict=True))
        v = _pad_to(self.assembly(ref), hr_padded)  # values: the HR s-cells
        out = window_attention(
            q, k, v, win, ones, self.heads, mask, SOFTMAX_SCALE, shifts, self.scale
        )
        hr = (n * s for n, s in zip(size, self.scale, strict=True))
        return out[(slice(None), slice(None), *(slice(0, n) for n in hr))]

    def extra_repr(self) -> str:
        return f"scale={self.scale}, window={self.window}, heads={self.heads}"
