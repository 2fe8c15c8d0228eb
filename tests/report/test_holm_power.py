"""Statistical power of the default test split and the Holm correction (issue 9).

With 10 paired subjects a real difference is found significant after Holm correction across
models, and a null difference is not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crfm_bench.errors import InputError
from crfm_bench.report.stats import ALPHA, compare_to_best, holm_adjust


def holm_by_definition(p: list[float]) -> list[float]:
    """Holm (1979) written out: reject H_(i) while p_(i) <= alpha / (m - i + 1), so the
    adjusted p of H_(i) is the largest (m - j + 1) p_(j) over j <= i, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order):
        out[i] = min(1.0, max((m - j) * p[order[j]] for j in range(rank + 1)))
    return out


@pytest.mark.parametrize(
    "p",
    [[0.01, 0.04, 0.03], [0.2, 0.001, 0.5, 0.02], [0.3], [0.05, 0.05, 0.05], [0.9, 0.8]],
)
def test_holm_matches_its_definition(p: list[float]) -> None:
    np.testing.assert_allclose(holm_adjust(p), holm_by_definition(p))


def test_holm_is_monotone_in_the_sorted_order_and_never_below_raw() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 1, rng.integers(1, 8))
        adj = holm_adjust(p)
        assert (adj >= p - 1e-15).all() and (adj <= 1).all()
        order = np.argsort(p)
        assert (np.diff(adj[order]) >= -1e-15).all()


def test_holm_skips_missing_tests_and_rejects_bad_p() -> None:
    adj = holm_adjust([0.01, float("nan"), 0.02])
    assert np.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [0.02, 0.02])  # m = 2, not 3
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        holm_adjust([1.5])


def _case(effects: dict[str, float], n: int = 10, noise: float = 0.3, seed: int = 0):
    """Per-subject PSNR/SSIM of models offset from a shared subject effect (dB)."""
    rng = np.random.default_rng(seed)
    subject = rng.normal(27.0, 1.5, n)  # subjects differ far more than models do
    rows = []
    for model, effect in effects.items():
        psnr = subject + effect + rng.normal(0.0, noise, n)
        for i in range(n):
            rows.append(
                {
                    "model": model,
                    "subject": f"sub-{i:02d}",
                    "psnr": psnr[i],
                    "ssim": 0.80 + psnr[i] / 200,
                }
            )
    return pd.DataFrame(rows)


def test_a_known_half_db_difference_over_ten_subjects_is_significant_after_holm() -> None:
    # crfm is 0.5 dB better than edsr on average; per-subject noise 0.3 dB, subject spread
    # 1.5 dB: only a paired test can see it. Four comparisons are corrected together.
    df = _case({"crfm": 0.5, "edsr": 0.0, "minet": 0.1, "tricubic": -2.0, "zerofill": -1.0})
    table = compare_to_best(df, n_resamples=4000)
    psnr = table[table.metric == "psnr"].set_index("model")
    assert set(table["best"]) == {"crfm"}
    assert (psnr["n"] == 10).all()
    edsr = psnr.loc["edsr"]
    assert edsr["mean_diff"] == pytest.approx(0.5, abs=0.25)
    assert 0 < edsr["ci_low"] <= edsr["mean_diff"] <= edsr["ci_high"]
    assert edsr["p_value"] < edsr["p_holm"] < ALPHA and bool(edsr["significant"])
    assert psnr["significant"].all()
    np.testing.assert_allclose(psnr["p_holm"], holm_by_definition(list(psnr["p_value"])))
    ssim = table[table.metric == "ssim"].set_index("model")
    assert bool(ssim.loc["edsr", "significant"])


def test_no_difference_is_not_significant() -> None:
    # edsr and crfm-noref equal in expectation; over several seeds the corrected test
    # rejects at most rarely, and on this seed not at all
    df = _case({"edsr": 0.0, "crfm-noref": 0.0, "tricubic": -2.0}, seed=1)
    table = compare_to_best(df, metrics=("psnr",), n_resamples=4000).set_index("model")
    null = table.loc[[m for m in ("edsr", "crfm-noref") if m in table.index]].iloc[0]
    assert not bool(null["significant"]) and null["p_holm"] >= ALPHA
    assert null["ci_low"] <= 0 <= null["ci_high"]
    assert bool(table.loc["tricubic", "significant"])


def test_the_null_rejection_rate_is_near_alpha_or_below() -> None:
    # Holm controls the family-wise error: across 40 null data sets with two equal
    # competitors of the best model, a false rejection happens in few of them
    false = 0
    for seed in range(40):
        df = _case({"a": 0.0, "b": 0.0, "c": 0.0}, seed=100 + seed)
        table = compare_to_best(df, metrics=("psnr",), best="a", n_resamples=200)
        false += bool(table["significant"].any())
    assert false <= 6  # expected <= 0.05 * 40 = 2; binomial tail P(X > 6) < 0.005


def test_ten_subjects_can_reach_p_below_one_percent() -> None:
    # the floor the report prints: 2 * 2^-10 with every difference of one sign
    df = _case({"best": 1.0, "other": 0.0}, noise=0.05)
    row = compare_to_best(df, metrics=("psnr",), n_resamples=200).iloc[0]
    assert row["p_floor"] == pytest.approx(2 * 2.0**-10)
    assert row["p_value"] == pytest.approx(row["p_floor"])
