"""Full-volume super-resolution by a sliding window, with blended seams.

The LR volume is covered by overlapping windows on the LR grid; each window's prediction
(on the HR grid, with the matching window of the HR reference) is weighted by a Gaussian
(nnU-Net style: sigma = 1/8 of the window, or constant weights) and accumulated, then
normalised by the summed weights. A margin at each window side that is not the volume's own
border gets no weight: there the network saw a cut-off neighbourhood (for an interpolator,
clamped samples), and the overlap guarantees a neighbouring window covers it from inside.

Memory is bounded by the window and batch size, not by the volume: one model call sees at
most ``batch_size`` windows' worth of voxels. By default (:func:`plan_windows`, layout
``budget``) the windows one call may hold are merged into one box, so their shared overlap
is computed once; ``fast=False`` keeps the plain algorithm (fixed cubes) as a reference.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch


def window_starts(n: int, w: int, overlap: float) -> list[int]:
    """Start indices of windows of length ``w`` covering ``[0, n)`` with at least ``overlap``."""
    if w >= n:
        return [0]
    stride = max(1, int(w * (1.0 - overlap)))
    starts = list(range(0, n - w + 1, stride))
    if starts[-1] != n - w:
        starts.append(n - w)
    return starts


def blend_weights(shape: tuple[int, ...], mode: str = "gaussian") -> torch.Tensor:
    """Window weights: separable Gaussian with sigma = size/8 (peak 1), or ones."""
    if mode == "constant":
        return torch.ones(shape)
    w = torch.ones(())
    for n in shape:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        g = torch.exp(-0.5 * (x / max(n / 8.0, 1e-3)) ** 2)
        w = w[..., None] * (g / g.max())
    return w.clamp_min(1e-3)


def seam_margins(n_hr: int, w_hr: int, stride_hr: int, s: int) -> int:
    """HR voxels dropped at an inner window side: at least one LR cell, at most what the
    overlap still covers from the neighbouring window, about 1/8 of the window."""
    if w_hr >= n_hr:
        return 0
    wanted = max(s, w_hr // 8)
    return max(0, min(wanted, (w_hr - stride_hr) // 2))


# torch (2.13) runs a 3x3x3 float conv3d of batch 1 on CPU with ``slow_conv3d`` (im2col,
# measured 5-8x slower per voxel than oneDNN here) unless N*C*D*H > 20480 (a rule made for
# 2D: the last axis is not counted). A single-window call therefore needs D*H > 20480 / 16
# (16: the narrowest feature width of the tiny models); otherwise windows go two per call.
SLOW_CONV_FIRST_AXES = 20480 // 16 + 1


def overlap_voxels(w: int, overlap: float) -> int:
    """Voxels two neighbouring windows of length ``w`` share (as :func:`window_starts`)."""
    return w - max(1, int(w * (1.0 - overlap)))


def even_starts(n: int, k: int, o: int) -> tuple[int, list[int]]:
    """(length, starts) of ``k`` windows of one length covering ``[0, n)``, spread evenly,
    neighbours sharing at least ``o`` voxels; the length is the shortest that does."""
    if k <= 1:
        return n, [0]
    size = min(n, math.ceil((n + (k - 1) * o) / k))
    return size, [round(i * (n - size) / (k - 1)) for i in range(k)]


@dataclass(frozen=True)
class WindowPlan:
    """How a volume is cut: LR window shape, starts per axis, HR seam margin per axis, and
    windows per model call."""

    window: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    margins: tuple[int, ...]
    per_call: int

    @property
    def corners(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*self.starts))

    @property
    def voxels(self) -> int:
        """LR voxels the model computes over the whole plan."""
        return math.prod(self.window) * len(self.corners)


def plan_windows(
    lr_shape: tuple[int, ...],
    scale: tuple[int, ...],
    window: int,
    overlap: float = 0.25,
    batch_size: int = 2,
    tiling: str = "budget",
) -> WindowPlan:
    """Cut an LR volume into windows for :func:`sliding_window_sr`.

    The nominal window is ``window // scale`` LR voxels per axis (a cube on the HR grid),
    neighbours overlapping by :func:`overlap_voxels`; the memory of one model call is bounded
    by ``batch_size`` such windows.

    ``tiling="fixed"``: cubes at :func:`window_starts`, ``batch_size`` per call (the plain
    layout; the last window of an axis is moved back to the end, so it can overlap its
    neighbour far more than asked for).

    ``tiling="budget"`` (default): ``batch_size`` neighbouring cubes of one call are merged
    into one larger box, so their shared overlap is computed once instead of twice: the
    layout (windows per axis, each axis cut evenly by :func:`even_starts`, every seam still
    overlapping by at least the asked voxels) is the one that computes the fewest LR voxels
    (then: fewest calls) among those whose call fits the budget of ``batch_size`` nominal
    windows; windows that fit several times into the budget are batched, and a call of a
    single 3D window must be long enough on its first two axes
    (:data:`SLOW_CONV_FIRST_AXES`) for torch's fast CPU convolution. Example: LR
    40x48x42, window 48 HR at x2, overlap 0.25: ``fixed`` computes 12 cubes of 24^3 (2.06 x
    the volume's voxels); ``budget`` with batch 2: 12 boxes of 23x20x24, two per call (1.64 x);
    with batch 4: 2 boxes of 40x48x24, one per call (1.14 x).
    """
    nd = len(lr_shape)
    hr_shape = tuple(n * s for n, s in zip(lr_shape, scale, strict=True))
    w_nom = tuple(max(1, min(n, window // s)) for n, s in zip(lr_shape, scale, strict=True))
    o = tuple(overlap_voxels(w, overlap) for w in w_nom)
    if tiling == "fixed":
        w_lr = w_nom
        starts = [window_starts(n, w, overlap) for n, w in zip(lr_shape, w_nom, strict=True)]
        per_call = batch_size
    elif tiling == "budget":
        budget = batch_size * math.prod(w_nom)
        options = []
        for axis in range(nd):
            n, oa = lr_shape[axis], o[axis]
            cuts = {}
            for k in range(1, n + 1):
                size, st = even_starts(n, k, oa)
                if k > 1 and (size <= oa or 2 * size < w_nom[axis]):
                    break  # thinner windows only add overlap
                cuts.setdefault(size, (size, st))  # fewest windows for a length
            options.append(list(cuts.values()))
        best = None
        for combo in itertools.product(*options):
            vol = math.prod(size for size, _ in combo)
            if vol > budget:
                continue
            count = math.prod(len(st) for _, st in combo)
            per = max(1, budget // vol)
            if per == 1 and nd == 3 and combo[0][0] * combo[1][0] < SLOW_CONV_FIRST_AXES:
                continue  # torch's CPU conv3d would take its im2col path (see the constant)
            key = (vol * count, -(-count // per))
            if best is None or key < best[0]:
                best = (key, combo, per)
        if best is None:  # only single small windows fit (batch 1): the fixed layout
            return plan_windows(lr_shape, scale, window, overlap, batch_size, "fixed")
        _, combo, per_call = best
        w_lr = tuple(size for size, _ in combo)
        starts = [st for _, st in combo]
    else:
        raise ValueError(f"tiling {tiling!r} is not one of budget, fixed")
    margins = []
    for axis, st in enumerate(starts):
        w_hr = w_lr[axis] * scale[axis]
        # the narrowest seam bounds the margin (even strides differ by at most one voxel)
        stride = min(b - a for a, b in itertools.pairwise(st)) if len(st) > 1 else w_lr[axis]
        margins.append(seam_margins(hr_shape[axis], w_hr, stride * scale[axis], scale[axis]))
    return WindowPlan(w_lr, tuple(tuple(st) for st in starts), tuple(margins), per_call)


def _window_weights(
    weights: torch.Tensor,
    corner: tuple[int, ...],
    lr_shape: tuple[int, ...],
    w_lr: tuple[int, ...],
    margins: list[int],
) -> torch.Tensor:
    """``weights`` with zero at the inner seam margins of the window at ``corner`` (a copy)."""
    w = weights.clone()
    w_hr = weights.shape
    for axis, (c, m) in enumerate(zip(corner, margins, strict=True)):
        if m == 0:
            continue
        index = [slice(None)] * len(corner)
        if c > 0:  # inner low side
            index[axis] = slice(0, m)
            w[tuple(index)] = 0
        if c + w_lr[axis] < lr_shape[axis]:  # inner high side
            index[axis] = slice(w_hr[axis] - m, w_hr[axis])
            w[tuple(index)] = 0
    return w


@torch.no_grad()
def sliding_window_sr(
    model: torch.nn.Module,
    lr: np.ndarray,
    ref: np.ndarray | None,
    scale: tuple[int, ...],
    window: int,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 2,
    device: torch.device | str = "cpu",
    fast: bool = True,
    tiling: str | None = None,
) -> np.ndarray:
    """Super-resolve a whole LR volume ``(X, Y, Z)`` to ``lr.shape * scale``.

    ``window`` is the HR window edge in voxels (rounded down to a multiple of the scale and
    clipped to the volume); ``ref`` is the HR reference on the HR grid, or None. One model
    call sees at most ``batch_size`` windows' worth of voxels (see :func:`plan_windows`).

    ``fast`` (default): the ``budget`` layout of :func:`plan_windows`, the weights of each
    kind of window (first, inner or last along each axis) built once, only the weighted
    part of a prediction accumulated, under ``torch.inference_mode``. ``fast=False`` is the
    plain reference path: the ``fixed`` layout, ``batch_size`` windows per call, every
    window's weights built anew. ``tiling`` overrides the layout of either path; with the
    same layout both give the same result (to float rounding).
    """
    scale = tuple(scale)
    if not fast:
        plan = plan_windows(lr.shape, scale, window, overlap, batch_size, tiling or "fixed")
        return _sliding_plain(model, lr, ref, scale, plan, blend, batch_size, device)
    device = torch.device(device)
    plan = plan_windows(lr.shape, scale, window, overlap, batch_size, tiling or "budget")
    hr_shape = tuple(n * s for n, s in zip(lr.shape, scale, strict=True))
    w_lr, margins = plan.window, plan.margins
    w_hr = tuple(w * s for w, s in zip(w_lr, scale, strict=True))
    weights = blend_weights(w_hr, blend)
    corners = plan.corners

    # One weight box per kind of window: (inner low side?, inner high side?) per axis.
    def kind_of(corner: tuple[int, ...]) -> tuple[tuple[bool, bool], ...]:
        return tuple((c > 0, c + w < n) for c, w, n in zip(corner, w_lr, lr.shape, strict=True))

    kinds: dict[tuple, tuple[tuple[slice, ...], torch.Tensor]] = {}
    for corner in corners:
        key = kind_of(corner)
        if key not in kinds:
            w = _window_weights(weights, corner, lr.shape, w_lr, margins)
            box = tuple(
                slice(m if lo else 0, n - m if hi else n)
                for (lo, hi), m, n in zip(key, margins, w_hr, strict=True)
            )
            kinds[key] = (box, w[box].contiguous())

    out = torch.zeros(hr_shape)
    norm = torch.zeros(hr_shape)
    lr_t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
    ref_t = None if ref is None else torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))

    def lr_window(cn: tuple[int, ...]) -> torch.Tensor:
        return lr_t[tuple(slice(c, c + w) for c, w in zip(cn, w_lr, strict=True))]

    def hr_window(t: torch.Tensor, cn: tuple[int, ...]) -> torch.Tensor:
        return t[tuple(slice(c * s, c * s + w) for c, s, w in zip(cn, scale, w_hr, strict=True))]

    with torch.inference_mode():
        for i in range(0, len(corners), plan.per_call):
            chunk = corners[i : i + plan.per_call]
            xb = torch.stack([lr_window(cn) for cn in chunk])[:, None].to(device)
            rb = None
            if ref_t is not None:
                rb = torch.stack([hr_window(ref_t, cn) for cn in chunk])[:, None].to(device)
            pred = model(xb, rb).float().cpu()
            for k, cn in enumerate(chunk):
                box, wk = kinds[kind_of(cn)]
                dst = tuple(
                    slice(c * s + b.start, c * s + b.stop)
                    for c, s, b in zip(cn, scale, box, strict=True)
                )
                out[dst].addcmul_(pred[k, 0][box], wk)
                norm[dst].add_(wk)
    return out.div_(norm).numpy()


def _sliding_plain(
    model: torch.nn.Module,
    lr: np.ndarray,
    ref: np.ndarray | None,
    scale: tuple[int, ...],
    plan: WindowPlan,
    blend: str,
    batch_size: int,
    device: torch.device | str,
) -> np.ndarray:
    """The plain path of :func:`sliding_window_sr`: every window's weights built anew."""
    device = torch.device(device)
    hr_shape = tuple(n * s for n, s in zip(lr.shape, scale, strict=True))
    w_lr, margins = plan.window, plan.margins
    w_hr = tuple(w * s for w, s in zip(w_lr, scale, strict=True))
    weights = blend_weights(w_hr, blend)
    out = torch.zeros(hr_shape)
    norm = torch.zeros(hr_shape)
    corners = plan.corners
    lr_t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
    ref_t = None if ref is None else torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))
    for i in range(0, len(corners), batch_size):
        chunk = corners[i : i + batch_size]
        lr_sl = [tuple(slice(c, c + w) for c, w in zip(cn, w_lr, strict=True)) for cn in chunk]
        hr_sl = [
            tuple(slice(c * s, c * s + w) for c, s, w in zip(cn, scale, w_hr, strict=True))
            for cn in chunk
        ]
        xb = torch.stack([lr_t[sl] for sl in lr_sl])[:, None].to(device)
        rb = None if ref_t is None else torch.stack([ref_t[sl] for sl in hr_sl])[:, None].to(device)
        pred = model(xb, rb).float().cpu()
        for k, sl in enumerate(hr_sl):
            wk = _window_weights(weights, chunk[k], lr.shape, w_lr, list(margins))
            out[sl] += pred[k, 0] * wk
            norm[sl] += wk
    return (out / norm).numpy()
