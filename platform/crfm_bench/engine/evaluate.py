"""Full-volume evaluation on the test split, per the metric contract (METRICS.md).

Learned models predict through the sliding window (:mod:`crfm_bench.engine.inference`),
which bounds memory. Training-free models (``trainable = False``: zerofill, tricubic,
trilinear) run once on the whole LR volume: they have no memory problem, and a window would
change what they compute (zero-filling a window Fourier-transforms that window alone, so it
wraps around and loses 2 dB or more against zero-filling the whole volume; issue 9).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crfm_bench.config import Params
from crfm_bench.data.volume import save_volume
from crfm_bench.engine.data import Case
from crfm_bench.engine.inference import sliding_window_sr
from crfm_bench.engine.memory import reuse_freed_memory
from crfm_bench.metrics import evaluate_volume


@torch.no_grad()
def whole_volume_sr(
    model: torch.nn.Module,
    lr: np.ndarray,
    ref: np.ndarray | None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """One forward pass of ``model`` on the whole LR volume ``(X, Y, Z)``; ``ref`` on the HR
    grid or None. Returns the prediction on the HR grid as float32 ``(X*s, Y*s, Z*s)``."""
    x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))[None, None].to(device)
    r = None
    if ref is not None:
        r = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))[None, None].to(device)
    return model(x, r).float().cpu()[0, 0].numpy()


def predict_volume(
    model: torch.nn.Module,
    lr: np.ndarray,
    ref: np.ndarray | None,
    params: Params,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The benchmark's prediction of one normalised LR volume: the whole volume at once for
    a training-free model, else the sliding window of ``params.eval``."""
    if not getattr(model, "trainable", True):
        return whole_volume_sr(model, lr, ref, device)
    e = params.eval
    return sliding_window_sr(
        model,
        lr,
        ref,
        params.task.factors,
        window=e.window,
        overlap=e.overlap,
        blend=e.blend,
        batch_size=e.batch_size,
        device=device,
    )


def evaluate_cases(
    model: torch.nn.Module,
    name: str,
    cases: list[Case],
    params: Params,
    out_dir: Path | None = None,
    device: str | torch.device = "cpu",
    on_prediction: Callable[[int, Case, np.ndarray, dict], None] | None = None,
) -> pd.DataFrame:
    """Per-subject metrics of ``model`` on ``cases`` (one row per subject).

    Each prediction is made on normalised intensities (:func:`predict_volume`: a sliding
    window, or the whole volume for a training-free model), brought back to
    the subject's intensity scale, and scored against the HR volume by
    :func:`crfm_bench.metrics.evaluate_volume`. With ``out_dir``, predictions are written
    as NIfTI on the HR grid with the HR affine (``eval.save_predictions``).
    ``on_prediction(i, case, sr, metrics)`` is called after each subject (``crfm-bench run``
    draws the first subject's slices with it; the engine itself draws nothing).
    """
    reuse_freed_memory()
    e = params.eval
    model = model.to(device).eval()
    needs_ref = bool(getattr(model, "needs_reference", False))
    rows = []
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        sr_n = predict_volume(model, case.lr, case.ref if needs_ref else None, params, device)
        seconds = time.perf_counter() - t0
        sr = (sr_n * case.divisor).astype(np.float32)
        hr = (case.hr * case.divisor).astype(np.float32)
        metrics = evaluate_volume(sr, hr, slice_axis=e.slice_axis)
        rows.append({"model": name, "subject": case.subject, **metrics, "infer_seconds": seconds})
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            if e.save_predictions:
                save_volume(out_dir / f"{case.subject}_sr.nii.gz", sr, case.hr_affine)
        if on_prediction is not None:
            on_prediction(i, case, sr, metrics)
    return pd.DataFrame(rows)
