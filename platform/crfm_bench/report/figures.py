"""Figures: LR | SR | HR | |error| slices with one colour scale (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crfm_bench.atomic import atomic_path


def upsample_nearest(lr: np.ndarray, scale: tuple[int, ...]) -> np.ndarray:
    """LR on the HR grid by voxel repetition (how the LR looks, no interpolation)."""
    out = lr
    for axis, s in enumerate(scale):
        out = np.repeat(out, s, axis=axis)
    return out


def slice_panel(
    path: str | Path,
    lr_on_hr: np.ndarray,
    sr: np.ndarray,
    hr: np.ndarray,
    title: str = "",
    index: tuple[int, int, int] | None = None,
    vmax: float | None = None,
) -> Path:
    """Write a PNG: rows axial, coronal, sagittal; columns LR, SR, HR, |SR - HR|.

    Intensities share one colour scale (0 to ``vmax``, default HR's 99.5th percentile); the
    error column uses its own scale, 0 to ``vmax / 4``. Arrays are (X, Y, Z) in RAS voxel order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = index or tuple(n // 2 for n in hr.shape)
    vmax = vmax or float(np.percentile(hr, 99.5)) or 1.0
    views = [
        ("axial", lambda v: v[:, :, index[2]].T),
        ("coronal", lambda v: v[:, index[1], :].T),
        ("sagittal", lambda v: v[index[0], :, :].T),
    ]
    fig, axes = plt.subplots(3, 4, figsize=(10, 8), constrained_layout=True)
    err = np.abs(sr - hr)
    for r, (name, cut) in enumerate(views):
        for c, (label, vol) in enumerate(
            (("LR", lr_on_hr), ("SR", sr), ("HR", hr), ("|SR-HR|", err))
        ):
            ax = axes[r, c]
            is_err = c == 3
            ax.imshow(
                cut(vol),
                cmap="magma" if is_err else "gray",
                vmin=0,
                vmax=vmax / 4 if is_err else vmax,
                origin="lower",
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label)
            if c == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
