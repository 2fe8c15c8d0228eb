"""Sliding-window inference: same result as one pass, memory bounded by the window."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from crfm_bench.engine.inference import (
    SLOW_CONV_FIRST_AXES,
    blend_weights,
    overlap_voxels,
    plan_windows,
    sliding_window_sr,
    window_starts,
)
from crfm_bench.models import create_model


class Recorder(torch.nn.Module):
    """Wraps a real model and records the input shapes it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.shapes = []

    def forward(self, lr, ref=None):
        self.shapes.append(tuple(lr.shape))
        return self.model(lr, ref)


def test_window_starts_cover_the_axis():
    for n, w, ov in [(40, 16, 0.25), (17, 8, 0.5), (8, 16, 0.25), (33, 11, 0.0)]:
        starts = window_starts(n, w, ov)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s : s + w] = True
        assert covered.all() and starts[0] == 0 and max(starts) + min(w, n) == n


def test_gaussian_weights_peak_in_the_centre():
    w = blend_weights((9, 9, 9))
    assert w[4, 4, 4] == pytest.approx(1.0) and w[0, 0, 0] < 0.01


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 1, 4)])
def test_windowed_equals_one_pass_for_a_local_operator(rng, scale):
    # trilinear interpolation is local (2 taps): away from the window borders the windowed
    # result must equal the single pass; Gaussian blending only mixes identical values.
    model = create_model("trilinear", spatial_dims=3, scale=scale)
    lr = rng.random((20, 18, 12)).astype(np.float32)
    full = model(torch.from_numpy(lr)[None, None])[0, 0].numpy()
    rec = Recorder(model)
    win = sliding_window_sr(rec, lr, None, scale, window=16, overlap=0.5, batch_size=3)
    assert win.shape == full.shape
    # Inner window margins (>= one LR cell) get no weight, so the clamped samples at a
    # window's cut never leak into the result: identical to the single pass everywhere.
    np.testing.assert_allclose(win, full, atol=1e-5)
    # memory bound: no call sees more voxels than batch_size windows of the window size
    lr_window = tuple(min(n, 16 // s) for n, s in zip(lr.shape, scale, strict=True))
    assert all(math.prod(s) <= 3 * math.prod(lr_window) for s in rec.shapes)
    assert len(rec.shapes) > 1


def test_window_covering_the_volume_is_exactly_one_pass(rng):
    model = create_model("edsr", spatial_dims=3, scale=2).eval()
    lr = rng.random((8, 8, 8)).astype(np.float32)
    with torch.no_grad():
        full = model(torch.from_numpy(lr)[None, None])[0, 0].numpy()
    win = sliding_window_sr(model, lr, None, (2, 2, 2), window=16, overlap=0.25)
    np.testing.assert_allclose(win, full, rtol=1e-5, atol=1e-6)


def test_reference_windows_follow_the_lr_windows(rng):
    # a reference model sees the HR reference window that matches each LR window:
    # feed ref = upsampled(lr) and check a reference-driven output stays consistent
    model = create_model("crfm", spatial_dims=3, scale=2).eval()
    lr = rng.random((12, 12, 12)).astype(np.float32)
    ref = np.repeat(np.repeat(np.repeat(lr, 2, 0), 2, 1), 2, 2)
    out = sliding_window_sr(model, lr, ref, (2, 2, 2), window=16, overlap=0.5)
    assert out.shape == (24, 24, 24) and np.isfinite(out).all()
    shuffled = sliding_window_sr(model, lr, ref[::-1].copy(), (2, 2, 2), window=16, overlap=0.5)
    assert not np.allclose(out, shuffled)

    # each call's reference window is exactly the HR window of its LR window
    class NearestWithRefCheck(torch.nn.Module):
        needs_reference = True

        def __init__(self):
            super().__init__()
            self.aligned = []

        def forward(self, lr, ref):
            up = lr.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
            self.aligned.append(torch.equal(up, ref))
            return up

    check = NearestWithRefCheck()
    lr = rng.random((20, 12, 12)).astype(np.float32)
    ref = np.repeat(np.repeat(np.repeat(lr, 2, 0), 2, 1), 2, 2)
    out = sliding_window_sr(check, lr, ref, (2, 2, 2), window=16, overlap=0.5, batch_size=1)
    assert len(check.aligned) > 1 and all(check.aligned)
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize(
    ("lr_shape", "scale", "window", "overlap", "batch"),
    [
        ((40, 48, 42), (2, 2, 2), 48, 0.25, 2),  # the default test volume and eval settings
        ((40, 48, 42), (2, 2, 2), 48, 0.25, 1),
        ((64, 64, 16), (1, 1, 4), 32, 0.25, 4),
        ((30, 20, 50), (2, 2, 2), 16, 0.5, 3),
    ],
)
def test_budget_plan_covers_overlaps_and_fits_the_memory_bound(
    lr_shape, scale, window, overlap, batch
):
    fixed = plan_windows(lr_shape, scale, window, overlap, batch, tiling="fixed")
    plan = plan_windows(lr_shape, scale, window, overlap, batch)
    for axis, n in enumerate(lr_shape):
        w, starts = plan.window[axis], plan.starts[axis]
        covered = np.zeros(n, bool)
        for a in starts:
            covered[a : a + w] = True
        assert covered.all() and starts[0] == 0 and starts[-1] + w == n
        # every seam keeps at least the asked overlap, and twice the margin, so the inner
        # margins (no weight) are always covered by a neighbour from inside
        seams = [a + w - b for a, b in itertools.pairwise(starts)]
        assert all(o >= overlap_voxels(fixed.window[axis], overlap) for o in seams)
        assert all(2 * plan.margins[axis] <= o * scale[axis] for o in seams)
    # one call: at most `batch` nominal windows' voxels
    assert plan.per_call * math.prod(plan.window) <= batch * math.prod(fixed.window)
    assert plan.voxels <= fixed.voxels


def test_budget_plan_of_the_default_volume():
    # LR 40x48x42 at x2 with eval's window and overlap: 12 cubes of 24^3 (2.06 x the volume)
    # before; the budget layout computes fewer voxels, and with a budget of 4 windows one call
    # holds a whole 40x48 slab (1.14 x)
    volume = 40 * 48 * 42
    fixed = plan_windows((40, 48, 42), (2, 2, 2), 48, 0.25, 2, tiling="fixed")
    assert fixed.voxels == 12 * 24**3
    two = plan_windows((40, 48, 42), (2, 2, 2), 48, 0.25, 2)
    assert two.voxels / volume < 1.65 and two.per_call == 2
    four = plan_windows((40, 48, 42), (2, 2, 2), 48, 0.25, 4)
    assert four.voxels / volume < 1.15 and four.window[:2] == (40, 48)


def test_single_window_calls_avoid_the_slow_cpu_convolution():
    # one window per call only if N*C*D*H clears torch's threshold for its oneDNN conv3d
    for batch in (1, 2, 3, 4, 8):
        plan = plan_windows((40, 48, 42), (2, 2, 2), 48, 0.25, batch)
        assert plan.per_call >= 2 or plan.window[0] * plan.window[1] >= SLOW_CONV_FIRST_AXES


@pytest.mark.parametrize("name", ["edsr", "crfm"])
@pytest.mark.parametrize("tiling", ["fixed", "budget"])
def test_fast_path_equals_the_plain_path(rng, name, tiling):
    torch.manual_seed(0)
    model = create_model(name, spatial_dims=3, scale=2).eval()
    lr = rng.random((14, 12, 10)).astype(np.float32)
    ref = rng.random((28, 24, 20)).astype(np.float32) if model.needs_reference else None
    # the same layout (a "budget" plan depends on the batch size; a "fixed" one does not, so
    # there the plain path also batches differently: two windows per call against four)
    kw = dict(window=16, overlap=0.25, tiling=tiling)
    plain_batch, fast_batch = (2, 4) if tiling == "fixed" else (2, 2)
    plain = sliding_window_sr(model, lr, ref, (2, 2, 2), batch_size=plain_batch, fast=False, **kw)
    fast = sliding_window_sr(model, lr, ref, (2, 2, 2), batch_size=fast_batch, **kw)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5)


class CallConstant(torch.nn.Module):
    """Predicts the number of the call (1, 2, ...) everywhere: shows which windows blend."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, lr, ref=None):
        self.calls += 1
        shape = (lr.shape[0], 1, *(2 * n for n in lr.shape[2:]))
        return torch.full(shape, float(self.calls))


@pytest.mark.parametrize("tiling", ["fixed", "budget"])
def test_seams_are_blended_by_both_paths(rng, tiling):
    lr = rng.random((24, 10, 10)).astype(np.float32)
    kw = dict(window=16, overlap=0.75, batch_size=1, tiling=tiling)
    model = CallConstant()
    fast = sliding_window_sr(model, lr, None, (2, 2, 2), **kw)
    plain = sliding_window_sr(CallConstant(), lr, None, (2, 2, 2), fast=False, **kw)
    np.testing.assert_allclose(fast, plain, rtol=1e-6)
    values = fast[:, 10, 10]  # a line through the volume's middle, across the x seams
    # blended voxels lie strictly between two windows' constants (weighted means of calls)
    blended = (np.abs(values - np.round(values)) > 1e-3).sum()
    assert blended > len(values) // 2 and values.min() >= 1 and values.max() <= model.calls
