"""summarise: mean, sample std and count per metric and model over subjects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crfm_bench.errors import InputError
from crfm_bench.metrics import summarise


@pytest.fixture
def per_subject() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["b", "a", "a", "b", "a"],
            "subject": ["s1", "s1", "s2", "s2", "s3"],
            "psnr": [30.0, 25.0, 27.0, 34.0, np.nan],
            "ssim": [0.90, 0.80, 0.84, 0.96, 0.82],
            "scale": [2, 2, 2, 2, 2],  # not a metric: ignored
        }
    )


def test_statistics_per_model(per_subject):
    out = summarise(per_subject)
    assert list(out["model"]) == ["a", "b"]
    assert list(out.columns) == [
        "model",
        "psnr_mean",
        "psnr_std",
        "psnr_n",
        "ssim_mean",
        "ssim_std",
        "ssim_n",
    ]
    a = out.set_index("model").loc["a"]
    assert a["psnr_mean"] == pytest.approx(26.0)
    assert a["psnr_std"] == pytest.approx(np.std([25.0, 27.0], ddof=1))
    assert a["psnr_n"] == 2  # the NaN is not counted
    assert a["ssim_mean"] == pytest.approx(np.mean([0.80, 0.84, 0.82]))
    assert a["ssim_std"] == pytest.approx(np.std([0.80, 0.84, 0.82], ddof=1))
    assert a["ssim_n"] == 3


def test_group_by_several_columns(per_subject):
    out = summarise(per_subject, by=["model", "scale"])
    assert list(out.columns[:2]) == ["model", "scale"]
    assert len(out) == 2


def test_single_subject_has_no_spread(per_subject):
    out = summarise(per_subject[per_subject["subject"] == "s3"])
    assert out["ssim_n"].iloc[0] == 1
    assert np.isnan(out["ssim_std"].iloc[0])


def test_missing_columns_are_rejected(per_subject):
    with pytest.raises(InputError, match="no column 'method'"):
        summarise(per_subject, by="method")
    with pytest.raises(InputError, match="none of the metric columns"):
        summarise(per_subject[["model", "subject"]])
