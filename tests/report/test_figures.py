"""Report figures: shared colour scale, slice choice, detail box, chart contents, PNG output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crfm_bench.metrics import foreground_mask
from crfm_bench.report import figures

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def head(rng) -> np.ndarray:
    """(24, 20, 16) noisy ellipsoid off the volume centre, textured inside."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in (24, 20, 16)), indexing="ij")
    inside = ((x - 14) / 7) ** 2 + ((y - 9) / 6) ** 2 + ((z - 7) / 5) ** 2 <= 1
    vol = np.where(inside, 100.0 + 30 * np.sin(x) * np.cos(y), 0.0)
    return (vol + rng.normal(0, 1, vol.shape).clip(0)).astype(np.float32)


def test_display_vmax_is_the_hr_foreground_percentile(head):
    expected = np.percentile(head[foreground_mask(head)].astype(np.float64), 99.5)
    assert figures.display_vmax(head) == pytest.approx(expected)
    assert figures.display_vmax(np.zeros((12, 12, 12))) == 1.0


def test_slice_indices_cut_through_the_foreground_centre(head):
    assert figures.slice_indices(head) == (14, 9, 7)


def test_view_slices_have_the_documented_orientation(head):
    idx = (3, 4, 5)
    assert figures.view_slice(head, "axial", idx).shape == (20, 24)
    assert figures.view_slice(head, "coronal", idx).shape == (16, 24)
    assert np.array_equal(figures.view_slice(head, "sagittal", idx), head[3].T)
    with pytest.raises(ValueError, match="oblique"):
        figures.view_slice(head, "oblique", idx)


def test_detail_box_lands_on_the_textured_region():
    image = np.zeros((40, 50))
    image[5:35, 5:45] = 1.0  # flat object
    image[22:32, 30:40] += np.indices((10, 10)).sum(axis=0) % 2  # checkerboard detail
    r0, c0, size = figures.detail_box(image, fraction=0.25)
    assert size == 10
    assert 0 <= r0 <= 40 - size and 0 <= c0 <= 50 - size
    assert abs(r0 - 22) <= 2 and abs(c0 - 30) <= 2


def test_comparison_figure_uses_the_given_scale_on_every_panel(head, rng):
    sr = head + rng.normal(0, 5, head.shape).astype(np.float32)
    lr = figures.upsample_nearest(head[::2, ::2, ::2], (2, 2, 2))
    fig = figures.comparison_figure(lr, sr, head, (14, 9, 7), vmax=123.0, title="m")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 18  # 3 views x 6 columns
    clims = sorted({im.get_clim() for im in images})
    assert clims == [(0.0, 123.0 * figures.ERROR_FRACTION), (0.0, 123.0)]
    # the |SR - HR| panel of the axial row shows the error of that slice
    err = next(im for im in images if im.get_clim()[1] < 123.0)
    assert np.allclose(err.get_array(), np.abs(sr - head)[:, :, 7].T, atol=1e-4)


def test_comparison_panel_writes_a_png_without_urls(head, tmp_path):
    path = figures.comparison_panel(
        tmp_path / "x.png", head, head, head, (14, 9, 7), vmax=100.0, boxes={"axial": (2, 3, 6)}
    )
    data = path.read_bytes()
    assert data.startswith(PNG)
    assert b"http" not in data and b"matplotlib.org" not in data
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_bar_chart_heights_and_error_bars_are_mean_and_std(tmp_path):
    board = pd.DataFrame(
        {
            "model": ["a", "b"],
            "psnr": [30.0, 28.0],
            "psnr_std": [0.5, 1.0],
            "ssim": [0.9, 0.8],
            "ssim_std": [0.01, 0.02],
        }
    )
    fig = figures.bars_figure(board)
    ax_psnr, ax_ssim = fig.axes
    assert [p.get_height() for p in ax_psnr.patches] == [30.0, 28.0]
    assert [p.get_height() for p in ax_ssim.patches] == [0.9, 0.8]
    caps = ax_psnr.collections[0].get_segments()  # vertical error bars, one per model
    assert [seg[1][1] - seg[0][1] for seg in caps] == pytest.approx([1.0, 2.0])
    assert [t.get_text() for t in ax_psnr.get_xticklabels()] == ["a", "b"]
    assert figures.metric_bars(tmp_path / "b.png", board).read_bytes().startswith(PNG)


def test_box_plots_show_every_subject_per_model(tmp_path):
    df = pd.DataFrame(
        {
            "model": ["a"] * 3 + ["b"] * 3,
            "subject": ["s1", "s2", "s3"] * 2,
            "psnr": [30.0, 31.0, 29.0, 25.0, np.inf, 26.0],
            "ssim": [0.9, 0.91, 0.89, 0.8, 0.81, 0.79],
        }
    )
    fig = figures.box_figure(df, models=["b", "a"])
    ax_psnr = fig.axes[0]
    assert [t.get_text() for t in ax_psnr.get_xticklabels()] == ["b", "a"]
    dots = [c.get_offsets()[:, 1] for c in ax_psnr.collections]
    assert sorted(dots[0]) == [25.0, 26.0]  # the infinite PSNR is left out
    assert sorted(dots[1]) == [29.0, 30.0, 31.0]
    assert figures.box_plots(tmp_path / "p.png", df).read_bytes().startswith(PNG)


def test_training_curves_plot_histories_and_skip_untrained_models(tmp_path):
    hist = pd.DataFrame(
        {"epoch": [2, 0, 1], "train_loss": [0.1, 0.3, 0.2], "val_psnr": [27, 25, 26]}
    )
    empty = pd.DataFrame(columns=["epoch", "train_loss", "val_psnr"])
    assert figures.training_curves(tmp_path / "none.png", {"tricubic": empty}) is None
    assert not (tmp_path / "none.png").exists()
    fig = figures.curves_figure({"edsr": hist, "tricubic": empty})
    ax_psnr, ax_loss = fig.axes
    (line,) = ax_psnr.get_lines()
    assert line.get_label() == "edsr"
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [25, 26, 27]
    assert ax_loss.get_yscale() == "log"
    path = figures.training_curves(tmp_path / "c.png", {"edsr": hist})
    assert path is not None and path.read_bytes().startswith(PNG)
