"""Full-volume super-resolution by a sliding window, with blended seams.

The LR volume is covered by overlapping windows on the LR grid; each window's prediction
(on the HR grid, with the matching window of the HR reference) is weighted by a Gaussian
(nnU-Net style: sigma = 1/8 of the window, or constant weights) and accumulated, then
normalised by the summed weights. Memory is bounded by the window and batch size, not by
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
    corners = list(
        itertools.product(
            *(window_starts(n, w, overlap) for n, w in zip(lr.shape, w_lr, strict=True))
        )
    )
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
            out[sl] += pred[k, 0] * weights
            norm[sl] += weights
    return (out / norm).numpy()
