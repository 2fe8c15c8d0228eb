"""Full-volume super-resolution by a sliding window, with blended seams.

The LR volume is covered by overlapping windows on the LR grid; each window's prediction
(on the HR grid, with the matching window of the HR reference) is weighted by a Gaussian
(nnU-Net style: sigma = 1/8 of the window, or constant weights) and accumulated, then
normalised by the summed weights. A margin at each window side that is not the volume's own
border gets no weight: there the network saw a cut-off neighbourhood (for an interpolator,
clamped samples), and the overlap guarantees a neighbouring window covers it from inside. Memory is bounded by the window and batch size, not by
the volume.
"""

from __future__ import annotations

import itertools

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
) -> np.ndarray:
    """Super-resolve a whole LR volume ``(X, Y, Z)`` to ``lr.shape * scale``.

    ``window`` is the HR window edge in voxels (rounded down to a multiple of the scale and
    clipped to the volume); ``ref`` is the HR reference on the HR grid, or None.
    """
    device = torch.device(device)
    hr_shape = tuple(n * s for n, s in zip(lr.shape, scale, strict=True))
    w_lr = tuple(max(1, min(n, window // s)) for n, s in zip(lr.shape, scale, strict=True))
    w_hr = tuple(w * s for w, s in zip(w_lr, scale, strict=True))
    weights = blend_weights(w_hr, blend)
    out = torch.zeros(hr_shape)
    norm = torch.zeros(hr_shape)
    starts = [window_starts(n, w, overlap) for n, w in zip(lr.shape, w_lr, strict=True)]
    margins = []
    for axis, st in enumerate(starts):
        stride = (st[1] - st[0]) * scale[axis] if len(st) > 1 else w_hr[axis]
        margins.append(seam_margins(hr_shape[axis], w_hr[axis], stride, scale[axis]))
    corners = list(itertools.product(*starts))

    def window_weights(corner: tuple[int, ...]) -> torch.Tensor:
        w = weights.clone()
        for axis, (c, m) in enumerate(zip(corner, margins, strict=True)):
            if m == 0:
                continue
            index = [slice(None)] * len(corner)
            if c > 0:  # inner low side
                index[axis] = slice(0, m)
                w[tuple(index)] = 0
            if c + w_lr[axis] < lr.shape[axis]:  # inner high side
                index[axis] = slice(w_hr[axis] - m, w_hr[axis])
                w[tuple(index)] = 0
        return w

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
            wk = window_weights(chunk[k])
            out[sl] += pred[k, 0] * wk
            norm[sl] += wk
    return (out / norm).numpy()
