"""Figures of the report (matplotlib, no display).

* :func:`comparison_panel` (one shared colour scale, the same slices and detail box for
  every model): LR | SR | HR | |error|; ``crfm-bench run`` writes it per model as
  ``slices.png`` (:func:`first_subject_slices`, a hook of the evaluation)
  and the report per model of the leaderboard;
* :func:`box_plots` of per-subject PSNR/SSIM, :func:`metric_bars` of mean +/- std, and
  :func:`training_curves` (validation PSNR and training loss per epoch).

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (for inspection); its
writer saves it as a PNG atomically (:func:`crfm_bench.atomic.atomic_path`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crfm_bench.atomic import atomic_path


def upsample_nearest(lr: np.ndarray, scale: tuple[int, ...]) -> np.ndarray:
    """LR on the HR grid by voxel repetition (how the LR looks, no interpolation)."""
    out = lr
    for axis, s in enumerate(scale):
        out = np.repeat(out, s, axis=axis)
    return out


# --- Report figures -----------------------------------------------------------------------
# Built on matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg when saved):
# no pyplot, no global backend switch, nothing shown on screen.

#: The three orthogonal views of an (X, Y, Z) RAS volume, as the comparison panel draws them.
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Percentile of the HR foreground that is the top of the shared intensity scale.
DISPLAY_PERCENTILE = 99.5

#: The |SR - HR| column shows 0 to ``vmax * ERROR_FRACTION``.
ERROR_FRACTION = 0.25

# PNGs carry no software banner (it holds a URL; the report must be free of them).
_PNG_METADATA = {"Software": None}

_DPI = 80


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=_DPI, format="png", metadata=_PNG_METADATA)
    return path


def view_slice(volume: np.ndarray, view: str, index: tuple[int, int, int]) -> np.ndarray:
    """The 2D image of ``view`` through voxel ``index`` of an (X, Y, Z) volume, rows first.

    axial: ``v[:, :, z].T`` (Y, X); coronal: ``v[:, y, :].T`` (Z, X); sagittal: ``v[x].T``
    (Z, Y). Drawn with ``origin="lower"`` the patient's superior/anterior side is up.
    """
    if view == "axial":
        return volume[:, :, index[2]].T
    if view == "coronal":
        return volume[:, index[1], :].T
    if view == "sagittal":
        return volume[index[0], :, :].T
    raise ValueError(f"view: {view!r} is not one of {', '.join(VIEWS)}")


def display_vmax(hr: np.ndarray, percentile: float = DISPLAY_PERCENTILE) -> float:
    """Top of the shared grey scale: the ``percentile`` of ``hr``'s foreground voxels.

    The foreground is the metric contract's brain mask (:func:`crfm_bench.metrics.
    foreground_mask`), so the scale matches the intensity normalisation of the metrics.
    Falls back to the whole volume, and to 1.0 for an all-zero volume.
    """
    from crfm_bench.metrics import foreground_mask

    hr = np.asarray(hr, dtype=np.float64)
    try:
        values = hr[foreground_mask(hr)]
    except ValueError:  # no positive voxel
        values = hr.ravel()
    value = float(np.percentile(values, percentile)) if values.size else 0.0
    return value if value > 0 else 1.0


def slice_indices(hr: np.ndarray) -> tuple[int, int, int]:
    """Voxel (x, y, z) through which the three views cut: the foreground's centre of mass.

    A function of the HR volume only, so every model's figure cuts the same slices.
    """
    from crfm_bench.metrics import foreground_mask

    hr = np.asarray(hr)
    try:
        mask = foreground_mask(hr)
    except ValueError:
        mask = np.zeros(hr.shape, dtype=bool)
    if not mask.any():
        return tuple(n // 2 for n in hr.shape)  # type: ignore[return-value]
    centre = np.argwhere(mask).mean(axis=0)
    return tuple(int(np.clip(round(c), 0, n - 1)) for c, n in zip(centre, hr.shape, strict=True))  # type: ignore[return-value]


def detail_box(image: np.ndarray, fraction: float = 0.3) -> tuple[int, int, int]:
    """Square ``(row, col, size)`` of a 2D HR slice with the most edge content inside the object.

    ``size`` is ``fraction`` of the shorter side (at least 4 pixels, at most the image); the
    box maximises the summed absolute forward differences of ``image`` times the squared fraction of
    its pixels above 10 % of the 99th percentile, so it lands on anatomy rather than on the
    object's outline or background. A function of HR alone: the same box for every model.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    rows, cols = image.shape
    size = int(min(rows, cols, max(4, round(min(rows, cols) * fraction))))
    # forward differences: unlike central ones they also see one-pixel texture
    dy = np.abs(np.diff(image, axis=0, append=image[-1:, :]))
    dx = np.abs(np.diff(image, axis=1, append=image[:, -1:]))
    energy = ndimage.uniform_filter(dx + dy, size=size, mode="constant")
    # favour boxes inside the object: weight by the squared fraction of bright pixels
    top = float(np.percentile(image, 99)) if image.size else 0.0
    inside = ndimage.uniform_filter((image > 0.1 * top).astype(np.float64), size, mode="constant")
    energy = energy * inside**2
    # centre of a box of side `size` starting at r0 sits at r0 + size // 2
    half = size // 2
    valid = energy[half : rows - size + half + 1, half : cols - size + half + 1]
    r0, c0 = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(r0), int(c0), size


def comparison_figure(
    lr_on_hr: np.ndarray,
    sr: np.ndarray,
    hr: np.ndarray,
    index: tuple[int, int, int],
    vmax: float,
    title: str = "",
    err_vmax: float | None = None,
    boxes: dict[str, tuple[int, int, int]] | None = None,
):
    """Figure with rows axial, coronal, sagittal; columns LR, SR, HR, |SR - HR|, SR/HR detail.

    Arrays are (X, Y, Z) on the HR grid in RAS voxel order (LR by :func:`upsample_nearest`).
    The grey columns use the fixed scale ``0..vmax`` and the error column ``0..err_vmax``
    (default ``vmax * ERROR_FRACTION``): pass the same values for every model so figures are
    comparable. ``boxes`` maps a view to its detail square ``(row, col, size)`` in that view's
    image (default :func:`detail_box` of the HR slice); it is outlined on LR/SR/HR and shown
    enlarged in the last two columns.
    """
    from matplotlib.patches import Rectangle

    err_vmax = vmax * ERROR_FRACTION if err_vmax is None else err_vmax
    err = np.abs(sr.astype(np.float64) - hr)
    fig = _new_figure((13.0, 7.2))
    axes = fig.subplots(3, 6)
    im_grey = im_err = None
    for r, view in enumerate(VIEWS):
        cuts = [view_slice(v, view, index) for v in (lr_on_hr, sr, hr, err)]
        box = (boxes or {}).get(view) or detail_box(cuts[2])
        r0, c0, s = box
        panels = [
            ("LR", cuts[0], False),
            ("SR", cuts[1], False),
            ("HR", cuts[2], False),
            ("|SR-HR|", cuts[3], True),
            ("SR detail", cuts[1][r0 : r0 + s, c0 : c0 + s], False),
            ("HR detail", cuts[2][r0 : r0 + s, c0 : c0 + s], False),
        ]
        for c, (label, image, is_err) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(
                image,
                cmap="magma" if is_err else "gray",
                vmin=0,
                vmax=err_vmax if is_err else vmax,
                origin="lower",
                interpolation="nearest",
            )
            if is_err:
                im_err = im
            else:
                im_grey = im
            if c < 3:
                ax.add_patch(
                    Rectangle(
                        (c0 - 0.5, r0 - 0.5), s, s, fill=False, edgecolor="#f5c518", linewidth=1.2
                    )
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label)
            if c == 0:
                ax.set_ylabel(f"{view} ({'xyz'[2 - r]}={index[2 - r]})")
    fig.colorbar(
        im_grey,
        ax=axes[-1, :3].tolist(),
        location="bottom",
        shrink=0.6,
        label=f"intensity (0 to {vmax:.4g})",
    )
    fig.colorbar(im_err, ax=axes[-1, 3], location="bottom", label=f"|SR-HR| (0 to {err_vmax:.4g})")
    if title:
        fig.suptitle(title)
    return fig


def comparison_panel(
    path: str | Path,
    lr_on_hr: np.ndarray,
    sr: np.ndarray,
    hr: np.ndarray,
    index: tuple[int, int, int],
    vmax: float,
    title: str = "",
    err_vmax: float | None = None,
    boxes: dict[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write :func:`comparison_figure` of the arguments as a PNG at ``path``."""
    fig = comparison_figure(lr_on_hr, sr, hr, index, vmax, title, err_vmax, boxes)
    return _save(fig, path)


def box_figure(
    per_subject: pd.DataFrame,
    models: list[str] | None = None,
    metrics: tuple[tuple[str, str], ...] = (("psnr", "PSNR (dB)"), ("ssim", "SSIM")),
):
    """Per-subject box plots, one panel per metric, one box per model with its subjects as dots.

    ``per_subject`` has columns ``model``, ``subject`` and the metric names; ``models`` fixes
    the order (default: order of appearance). Non-finite values are left out.
    """
    models = models or list(dict.fromkeys(per_subject["model"]))
    fig = _new_figure((5.0 * len(metrics), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    offsets = np.random.default_rng(0)  # fixed jitter: same picture for the same data
    for ax, (key, label) in zip(axes, metrics, strict=True):
        data = []
        for m in models:
            v = per_subject.loc[per_subject["model"] == m, key].to_numpy(dtype=np.float64)
            data.append(v[np.isfinite(v)])
        ax.boxplot(data, tick_labels=models, widths=0.5, showfliers=False)
        for i, v in enumerate(data, start=1):
            ax.scatter(i + offsets.uniform(-0.12, 0.12, v.size), v, s=14, color="#1f77b4", zorder=3)
        ax.set_ylabel(label)
        ax.set_title(f"{label} per test subject")
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(axis="y", alpha=0.3)
    return fig


def box_plots(
    path: str | Path,
    per_subject: pd.DataFrame,
    models: list[str] | None = None,
    metrics: tuple[tuple[str, str], ...] = (("psnr", "PSNR (dB)"), ("ssim", "SSIM")),
) -> Path:
    """Write :func:`box_figure` as a PNG at ``path``."""
    return _save(box_figure(per_subject, models, metrics), path)


def curves_figure(histories: dict[str, pd.DataFrame]):
    """Validation PSNR and training loss against epoch for every model with a history.

    ``histories`` maps a model to its ``history.csv`` table (``epoch``, ``train_loss``,
    ``val_psnr``). Models with an empty history (non-trainable) are skipped; None when no
    model has one. Left panel: validation PSNR (dB); right: training loss (log scale when
    positive).
    """
    curves = {m: h for m, h in histories.items() if h is not None and not h.empty and "epoch" in h}
    if not curves:
        return None
    fig = _new_figure((10.0, 3.8))
    ax_psnr, ax_loss = fig.subplots(1, 2)
    for model, h in curves.items():
        h = h.sort_values("epoch")
        if "val_psnr" in h and h["val_psnr"].notna().any():
            ax_psnr.plot(h["epoch"], h["val_psnr"], marker="o", ms=3, label=model)
        if "train_loss" in h and h["train_loss"].notna().any():
            ax_loss.plot(h["epoch"], h["train_loss"], marker="o", ms=3, label=model)
    ax_psnr.set(xlabel="epoch", ylabel="validation PSNR (dB)", title="validation PSNR")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    losses = [h["train_loss"].dropna() for h in curves.values() if "train_loss" in h]
    if losses and all((v > 0).all() for v in losses):
        ax_loss.set_yscale("log")
    for ax in (ax_psnr, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def training_curves(path: str | Path, histories: dict[str, pd.DataFrame]) -> Path | None:
    """Write :func:`curves_figure` as a PNG at ``path``; None (nothing written) if no history."""
    fig = curves_figure(histories)
    return None if fig is None else _save(fig, path)


def bars_figure(
    board: pd.DataFrame,
    metrics: tuple[tuple[str, str], ...] = (("psnr", "PSNR (dB)"), ("ssim", "SSIM")),
):
    """Bar chart of the mean of each metric per model with +/- 1 std (over subjects) error bars.

    ``board`` is a leaderboard table (columns ``model``, ``<metric>`` and ``<metric>_std``), drawn
    in its row order. Bars start at 0 (SSIM axis 0 to 1), so bar lengths are comparable.
    """
    fig = _new_figure((5.0 * len(metrics), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    x = np.arange(len(board))
    for ax, (key, label) in zip(axes, metrics, strict=True):
        mean = board[key].to_numpy(dtype=np.float64)
        std_col = f"{key}_std"
        std = board[std_col].to_numpy(dtype=np.float64) if std_col in board else np.zeros_like(mean)
        ax.bar(x, mean, yerr=np.nan_to_num(std), capsize=4, color="#4c72b0")
        ax.set_xticks(x, board["model"].astype(str).tolist(), rotation=30)
        if key.startswith("ssim"):
            ax.set_ylim(0.0, 1.0)
        ax.set_ylabel(label)
        ax.set_title(f"mean {label} (error bars: std over subjects)")
        ax.grid(axis="y", alpha=0.3)
    return fig


def metric_bars(
    path: str | Path,
    board: pd.DataFrame,
    metrics: tuple[tuple[str, str], ...] = (("psnr", "PSNR (dB)"), ("ssim", "SSIM")),
) -> Path:
    """Write :func:`bars_figure` as a PNG at ``path``."""
    return _save(bars_figure(board, metrics), path)


def first_subject_slices(out_dir: Path, label: str, scale: tuple[int, ...]):
    """An ``on_prediction(i, case, sr, metrics)`` hook for
    :func:`crfm_bench.engine.evaluate.evaluate_cases` that draws the first subject's
    comparison panel as ``out_dir/slices.png`` (same slices, scale and detail boxes as the
    report's)."""

    def hook(i: int, case, sr: np.ndarray, metrics: dict) -> None:
        if i != 0:
            return
        hr = (case.hr * case.divisor).astype(np.float32)
        comparison_panel(
            Path(out_dir) / "slices.png",
            upsample_nearest(case.lr * case.divisor, scale),
            sr,
            hr,
            index=slice_indices(hr),
            vmax=display_vmax(hr),
            title=f"{label}  {case.subject}  PSNR {metrics['psnr']:.2f} dB",
        )

    return hook
