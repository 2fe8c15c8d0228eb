"""The ablation page's statistics on constructed per-(seed, subject) tables: a known shift is
recovered with an interval that covers it, a zero shift in noise gives "no evidence", seeds
are averaged within a subject (subjects are the unit), pairs are matched by key, not order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from crfm_bench.errors import InputError
from crfm_bench.report.ablation import (
    HELPS,
    HURTS,
    NO_EVIDENCE,
    ModelSeeds,
    ablation_effects,
    paired_effect,
    verdict,
)

SUBJECTS = [f"sub-{i:02d}" for i in range(10)]
SEEDS = [0, 1, 2]


def table(values: np.ndarray) -> pd.DataFrame:
    """(seeds, subjects) array -> long table with psnr = value, ssim = value / 100."""
    rows = [
        {"seed": s, "subject": sub, "psnr": float(values[k, i]), "ssim": float(values[k, i]) / 100}
        for k, s in enumerate(SEEDS)
        for i, sub in enumerate(SUBJECTS)
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def base(rng) -> np.ndarray:
    # subjects differ a lot (hard and easy ones), seeds a little
    return 28.0 + rng.normal(0, 2.0, len(SUBJECTS))[None, :] + rng.normal(0, 0.1, (3, 10))


def test_known_shift_is_recovered_and_covered(base, rng):
    noise = rng.normal(0, 0.2, base.shape)
    e = paired_effect(table(base + 0.5 + noise), table(base), "psnr")
    assert e.n_subjects == 10 and e.n_seeds == 3
    assert e.ci_low < 0.5 < e.ci_high
    assert abs(e.mean - 0.5) < 0.15
    assert e.verdict == HELPS and e.ci_low > 0
    # the interval is Student's t over the subject means (seeds averaged first)
    d = noise.mean(axis=0) + 0.5
    low, high = sps.t.interval(0.95, 9, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(10))
    assert (e.ci_low, e.ci_high) == pytest.approx((low, high), rel=1e-10)
    assert e.mean == pytest.approx(d.mean())
    assert e.p_value == pytest.approx(sps.ttest_1samp(d, 0).pvalue)


def test_exact_shift_gives_a_point_interval(base):
    e = paired_effect(table(base - 0.25), table(base), "psnr")
    assert e.mean == pytest.approx(-0.25)
    assert e.ci_low == pytest.approx(-0.25) and e.ci_high == pytest.approx(-0.25)
    assert e.verdict == HURTS


def test_zero_shift_with_noise_is_no_evidence(base, rng):
    e = paired_effect(table(base + rng.normal(0, 0.3, base.shape)), table(base), "psnr")
    assert e.ci_low < 0 < e.ci_high
    assert e.verdict == NO_EVIDENCE
    assert e.p_value > 0.05


def test_seed_level_disagreement_is_shown_not_hidden(base):
    # seed 1 of the ablation is better on every subject, seeds 0 and 2 worse: the spread over
    # subjects cannot see that (the interval holds the networks fixed), so the per-seed means
    # are listed and the row says the seeds disagree
    shift = np.array([0.6, -1.0, 0.6])[:, None]
    e = paired_effect(table(base + shift), table(base), "psnr")
    assert e.per_seed == pytest.approx([0.6, -1.0, 0.6])
    assert e.mean == pytest.approx(0.2 / 3)
    ref = ModelSeeds("crfm", None, {}, table(base + shift))
    row = ablation_effects(ref, [ModelSeeds("crfm-nofmp", None, {}, table(base))])[0]
    assert row.seeds_disagree() and row.summary().endswith("seeds disagree in sign")


def test_subjects_are_the_unit_not_subject_seed_pairs(base, rng):
    # the same difference in every seed: three seeds must not narrow the interval
    d = rng.normal(0.3, 0.5, 10)
    first = table(base + d[None, :])[lambda t: t.seed == 0]
    one = paired_effect(first, table(base)[lambda t: t.seed == 0], "psnr")
    three = paired_effect(table(base + d[None, :]), table(base), "psnr")
    assert one.n_subjects == three.n_subjects == 10
    assert (three.ci_low, three.ci_high) == pytest.approx((one.ci_low, one.ci_high))


def test_pairs_by_key_not_row_order(base, rng):
    ref, abl = table(base + 0.4 + rng.normal(0, 0.2, base.shape)), table(base)
    shuffled = abl.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a, b = paired_effect(ref, abl, "ssim"), paired_effect(ref, shuffled, "ssim")
    assert (a.mean, a.ci_low, a.ci_high) == pytest.approx((b.mean, b.ci_low, b.ci_high))


def test_unpaired_tables_are_refused(base):
    abl = table(base)
    abl.loc[abl.subject == "sub-03", "subject"] = "sub-99"
    with pytest.raises(InputError, match="pairs differ"):
        paired_effect(table(base), abl, "psnr", what="runs/models/crfm-nofmp")
    with pytest.raises(InputError, match="pairs differ"):
        paired_effect(table(base), table(base)[lambda t: t.seed != 2], "psnr")
    with pytest.raises(InputError, match="twice"):
        paired_effect(table(base), pd.concat([table(base), table(base).head(1)]), "psnr")


def test_one_subject_gives_no_interval(base):
    one = table(base)[lambda t: t.subject == "sub-00"]
    e = paired_effect(one.assign(psnr=one.psnr + 1), one, "psnr")
    assert e.mean == pytest.approx(1.0) and np.isnan(e.ci_low) and e.verdict == NO_EVIDENCE


def test_verdict_edges():
    assert verdict(0.01, 0.5) == HELPS
    assert verdict(-0.5, -0.01) == HURTS
    assert verdict(0.0, 0.5) == NO_EVIDENCE  # touching zero is not evidence
    assert verdict(float("nan"), float("nan")) == NO_EVIDENCE


def test_parts_get_holm_adjusted_p_per_metric(base, rng):
    ref = ModelSeeds("crfm", None, {}, table(base + 0.5 + rng.normal(0, 0.2, base.shape)))
    abl = [
        ModelSeeds("crfm-nofmp", None, {}, table(base)),
        ModelSeeds("crfm-nograd", None, {}, table(base + 0.5 + rng.normal(0, 0.2, base.shape))),
    ]
    rows = ablation_effects(ref, abl)
    assert [r.model for r in rows] == ["crfm-nofmp", "crfm-nograd"]
    assert rows[0].part.startswith("FMP") and rows[1].part == "reference gradient branch G"
    assert rows[0].summary() == HELPS and rows[1].summary() == NO_EVIDENCE
    for m in ("psnr", "ssim"):
        p = sorted(r.effects[m].p_value for r in rows)
        adjusted = sorted(r.p_holm[m] for r in rows)
        assert adjusted[0] == pytest.approx(min(1.0, 2 * p[0]))
