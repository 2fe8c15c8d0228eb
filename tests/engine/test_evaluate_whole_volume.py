"""Training-free models are evaluated on the whole LR volume in one pass (issue 9).

A window would change what zero-filling computes (each window is Fourier-transformed on its
own and wraps around). Checked through the public evaluation path on a band-limited volume,
where zero-filling is exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crfm_bench.config import load_params
from crfm_bench.degrade.kspace import kspace_crop
from crfm_bench.engine.data import Case
from crfm_bench.engine.evaluate import evaluate_cases, predict_volume
from crfm_bench.engine.inference import sliding_window_sr
from crfm_bench.metrics import evaluate_volume
from crfm_bench.models import create_model

SIZE = (64, 64, 64)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def band_limited_case(seed: int = 0) -> Case:
    """A positive 64^3 volume whose spectrum lies inside the x2 LR band, and its k-space LR."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in SIZE), indexing="ij")
    hr = torch.full(SIZE, 3.0, dtype=torch.float64)
    for _ in range(12):
        phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        arg = torch.zeros(SIZE, dtype=torch.float64)
        for grid, n in zip(grids, SIZE, strict=True):
            kmax = n // 2 // 2 - 1  # below the LR Nyquist frequency
            k = int(torch.randint(-kmax, kmax + 1, (1,), generator=g))
            arg = arg + 2 * math.pi * k * grid / n
        hr = hr + 0.2 * torch.cos(arg + phase)
    lr = kspace_crop(hr, (2, 2, 2)).abs()
    divisor = float(np.percentile(hr.numpy(), 99.5))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    return Case(
        subject=f"band{seed}",
        split="test",
        lr=(lr / divisor).float().numpy(),
        hr=(hr / divisor).float().numpy(),
        ref=None,
        divisor=divisor,
        hr_affine=affine,
        lr_affine=np.diag([2.0, 2.0, 2.0, 1.0]),
        hr_path="",
        lr_path="",
    )


def test_zerofill_is_exact_on_a_band_limited_volume_through_the_evaluation_path() -> None:
    params = load_params(None)  # eval.window 48 < 64: learned models would be windowed
    case = band_limited_case()
    model = create_model("zerofill", 3, 2)
    row = evaluate_cases(model, "zerofill", [case], params).iloc[0]
    assert row["psnr"] > 70.0, row["psnr"]
    sr = predict_volume(model, case.lr, None, params)
    np.testing.assert_allclose(sr, case.hr, rtol=0, atol=2e-5)
    # what the window did before: each window zero-filled on its own wraps around
    windowed = sliding_window_sr(model, case.lr, None, (2, 2, 2), window=params.eval.window)
    assert evaluate_volume(windowed * case.divisor, case.hr * case.divisor)["psnr"] < 60.0


def test_tricubic_whole_volume_agrees_with_the_sliding_window() -> None:
    params = load_params(None)
    case = band_limited_case(seed=1)
    model = create_model("tricubic", 3, 2)
    whole = predict_volume(model, case.lr, None, params)
    windowed = sliding_window_sr(model, case.lr, None, (2, 2, 2), window=params.eval.window)
    assert whole.shape == windowed.shape == SIZE
    np.testing.assert_allclose(whole, windowed, rtol=0, atol=1e-5)
    row = evaluate_cases(model, "tricubic", [case], params).iloc[0]
    assert row["psnr"] == pytest.approx(
        evaluate_volume(windowed * case.divisor, case.hr * case.divisor)["psnr"], abs=1e-3
    )


def test_learned_models_still_use_the_sliding_window() -> None:
    params = load_params(None, ["eval.window=16", "eval.batch_size=2"])  # several calls
    case = band_limited_case(seed=2)
    torch.manual_seed(0)
    model = create_model("edsr", 3, 2, n_feats=4, n_blocks=1).eval()
    via_eval = predict_volume(model, case.lr, None, params)
    windowed = sliding_window_sr(model, case.lr, None, (2, 2, 2), window=16)
    np.testing.assert_array_equal(via_eval, windowed)
