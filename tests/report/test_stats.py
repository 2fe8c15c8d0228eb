"""Paired significance tests: agreement with scipy, small-n honesty, bootstrap behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from crfm_bench.errors import InputError
from crfm_bench.report.stats import (
    COLUMNS,
    bootstrap_mean_ci,
    compare_to_best,
    paired_wilcoxon,
    wilcoxon_floor,
)


def test_wilcoxon_matches_scipy_on_random_pairs(rng):
    a = rng.normal(30.0, 1.0, 9)
    b = a - rng.normal(0.3, 0.5, 9)
    res = paired_wilcoxon(a, b)
    ref = sps.wilcoxon(a, b, alternative="two-sided")
    assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.n == res.n_nonzero == 9


def test_large_consistent_difference_over_8_subjects_is_significant(rng):
    # every subject 2 dB better: the most extreme exact outcome, p = 2 * 2**-8 (< 0.01)
    b = rng.normal(28.0, 1.5, 8)
    a = b + 2.0 + rng.uniform(0.0, 0.2, 8)
    res = paired_wilcoxon(a, b)
    assert res.pvalue < 0.01
    assert res.pvalue == pytest.approx(2.0**-7)
    assert res.note == ""  # nothing to warn about: p could go below 0.05


def test_three_subjects_cannot_go_below_quarter():
    res = paired_wilcoxon([25.0, 26.0, 27.5], [20.0, 21.0, 22.0])
    assert res.pvalue == pytest.approx(0.25)
    assert res.p_floor == pytest.approx(0.25)
    assert "n=3: p cannot go below 0.25" in res.note


@pytest.mark.parametrize("n", [2, 3, 5, 8, 10])
def test_floor_is_two_to_the_one_minus_n_without_ties(n):
    assert wilcoxon_floor(np.arange(1.0, n + 1)) == pytest.approx(2.0 ** (1 - n))


def test_floor_ignores_the_sign_of_differences():
    assert wilcoxon_floor([-1.0, 2.0, -3.0, 4.0]) == pytest.approx(2.0**-3)


def test_all_zero_differences_give_p_one_without_error():
    x = [0.9, 0.8, 0.85, 0.7]
    res = paired_wilcoxon(x, x)
    assert res.pvalue == 1.0 and np.isnan(res.statistic)
    assert res.n == 4 and res.n_nonzero == 0
    assert "all differences are zero" in res.note


def test_some_zero_differences_are_dropped_like_scipy():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    b = a - np.array([0.0, 0.5, 0.7, -0.2, 0.9, 1.1])
    res = paired_wilcoxon(a, b)
    assert res.n_nonzero == 5
    assert res.pvalue == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert "1 zero differences dropped" in res.note


@pytest.mark.parametrize("values", [[], [3.0]])
def test_fewer_than_two_pairs_give_no_test(values):
    res = paired_wilcoxon(values, [v - 1 for v in values])
    assert np.isnan(res.pvalue) and res.n == len(values)
    assert "no test" in res.note


def test_unmatched_or_non_finite_pairs_are_rejected():
    with pytest.raises(InputError, match="pairs must match"):
        paired_wilcoxon([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="NaN or Inf"):
        paired_wilcoxon([1.0, np.nan, 3.0], [0.0, 1.0, 2.0])


def test_bootstrap_is_seeded_and_contains_the_mean(rng):
    d = rng.normal(0.8, 0.4, 30)  # enough distinct resamples for seeds to differ
    first = bootstrap_mean_ci(d, seed=7)
    assert bootstrap_mean_ci(d, seed=7) == first
    assert bootstrap_mean_ci(d, seed=8) != first
    assert first[0] < d.mean() < first[1]
    assert d.min() <= first[0] and first[1] <= d.max()  # a mean of resampled values


def test_bootstrap_width_matches_the_normal_theory_for_large_n(rng):
    # central limit theorem: 95 % interval of a mean ~ mean +/- 1.96 s / sqrt(n)
    d = rng.normal(1.0, 2.0, 400)
    low, high = bootstrap_mean_ci(d, n_resamples=4000, seed=0)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(d.mean(), abs=0.1 * half)


def test_bootstrap_degenerate_inputs():
    assert bootstrap_mean_ci([1.5, 1.5, 1.5]) == (1.5, 1.5)
    assert bootstrap_mean_ci([2.0]) == (2.0, 2.0)
    assert all(np.isnan(bootstrap_mean_ci([])))
    with pytest.raises(InputError, match="confidence"):
        bootstrap_mean_ci([1.0, 2.0], confidence=1.5)


def _per_subject(rng, n: int = 8) -> pd.DataFrame:
    base = rng.normal(27.0, 1.0, n)
    rows = []
    for model, offset in (("weak", -1.0), ("best", 1.5), ("mid", 0.0)):
        for i in range(n):
            psnr = base[i] + offset + rng.normal(0.0, 0.05)
            rows.append(
                {"model": model, "subject": f"sub-{i}", "psnr": psnr, "ssim": 0.8 + psnr / 1000}
            )
    return pd.DataFrame(rows)


def test_compare_to_best_picks_highest_mean_psnr_and_matches_scipy(rng):
    df = _per_subject(rng)
    table = compare_to_best(df, n_resamples=2000)
    assert list(table.columns) == list(COLUMNS)
    assert set(table["best"]) == {"best"}
    assert sorted(zip(table["metric"], table["model"], strict=True)) == [
        ("psnr", "mid"),
        ("psnr", "weak"),
        ("ssim", "mid"),
        ("ssim", "weak"),
    ]
    wide = df.pivot(index="subject", columns="model", values="psnr")
    row = table[(table.metric == "psnr") & (table.model == "weak")].iloc[0]
    d = wide["best"] - wide["weak"]
    assert row["mean_diff"] == pytest.approx(d.mean())
    assert row["p_value"] == pytest.approx(sps.wilcoxon(wide["best"], wide["weak"]).pvalue)
    assert row["p_value"] < 0.01 and row["n"] == 8
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    assert row["ci_low"] > 0  # 2.5 dB better on every subject


def test_compare_to_best_drops_unpaired_and_infinite_subjects(rng):
    df = _per_subject(rng, n=6)
    df = df[~((df.model == "weak") & (df.subject == "sub-0"))].copy()
    df.loc[(df.model == "mid") & (df.subject == "sub-1"), "psnr"] = np.inf
    table = compare_to_best(df, metrics=("psnr",), best="best", n_resamples=500)
    by_model = table.set_index("model")
    assert by_model.loc["weak", "n"] == 5 and by_model.loc["mid", "n"] == 5
    assert "1 unpaired or non-finite subjects dropped" in by_model.loc["weak", "note"]
    assert "1 unpaired or non-finite subjects dropped" in by_model.loc["mid", "note"]


def test_compare_to_best_with_one_model_is_empty_and_unknown_best_is_an_error(rng):
    df = _per_subject(rng, n=3)
    assert compare_to_best(df[df.model == "mid"]).empty
    with pytest.raises(InputError, match="nope"):
        compare_to_best(df, best="nope")
    with pytest.raises(InputError, match="ssim"):
        compare_to_best(df.drop(columns="ssim"))
