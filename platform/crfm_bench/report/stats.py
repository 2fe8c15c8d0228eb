r"""Significance of differences between models: paired tests over the test subjects.

Every model is evaluated on the same test subjects, so model comparisons are *paired*: for
subject :math:`i` let :math:`d_i = m_{best,i} - m_{other,i}` be the difference of a metric
(PSNR in dB, SSIM unitless) between the best model and another one.

* **Wilcoxon signed-rank test** (Wilcoxon 1945, "Individual comparisons by ranking methods",
  Biometrics Bulletin 1(6)), two-sided, via :func:`scipy.stats.wilcoxon` with its defaults
  (``zero_method="wilcox"``: zero differences are dropped; ``method="auto"``: the exact null
  distribution for small samples, the normal approximation otherwise). The statistic is the
  smaller of the rank sums of positive and negative differences.
* **How small p can get.** With :math:`n` non-zero differences and no ties, the most extreme
  outcome (all differences of one sign) has exact two-sided probability
  :math:`2 \cdot 2^{-n}`: 0.25 for :math:`n = 3`, 0.0625 for :math:`n = 5`, 0.0078 for
  :math:`n = 8`. :func:`wilcoxon_floor` computes this floor for the actual data (ties included)
  by testing :math:`|d_i|`; a table row states it, so three test subjects never look like
  evidence they cannot be.
* **Bootstrap interval** of the mean difference :math:`\bar d` (Efron & Tibshirani 1993, "An
  Introduction to the Bootstrap", ch. 13, percentile interval): resample the subjects with
  replacement ``n_resamples`` times with a seeded :func:`numpy.random.default_rng`, take the
  mean of each resample, and report the :math:`(1-c)/2` and :math:`(1+c)/2` percentiles. With
  :math:`n` subjects there are only :math:`\binom{2n-1}{n}` distinct resamples (10 for
  :math:`n = 3`), so small-n intervals are coarse and optimistic.
* **Holm correction** (Holm 1979, "A simple sequentially rejective multiple test procedure",
  Scand. J. Statist. 6(2)): the best model is compared with :math:`m` others, so per metric
  the :math:`m` Wilcoxon p-values are adjusted step-down: sorted ascending
  :math:`p_{(1)} \le \dots \le p_{(m)}`, :math:`\tilde p_{(i)} = \max_{j \le i}
  \min(1, (m - j + 1)\, p_{(j)})`. Rejecting where :math:`\tilde p < \alpha` controls the
  family-wise error rate at :math:`\alpha` under any dependence between the comparisons.
  Comparisons without a test (NaN p) are not counted in :math:`m`.

All functions are pure: numbers in, numbers (or a pandas table) out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crfm_bench.errors import InputError

#: Conventional level the page compares ``p_floor`` against.
ALPHA = 0.05


@dataclass(frozen=True)
class WilcoxonResult:
    """Outcome of :func:`paired_wilcoxon`.

    ``n`` pairs were given, ``n_nonzero`` of them differ. ``pvalue`` is NaN when no test is
    possible (``n < 2``) and 1.0 when every difference is zero. ``p_floor`` is the smallest
    p-value these ``n`` pairs could give (all differences of one sign).
    """

    statistic: float
    pvalue: float
    n: int
    n_nonzero: int
    p_floor: float
    note: str


def _differences(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(f"paired test: {a.size} values against {b.size}; pairs must match")
    d = a - b
    if not np.isfinite(d).all():
        raise InputError(f"paired test: {int((~np.isfinite(d)).sum())} differences are NaN or Inf")
    return d


def wilcoxon_floor(d: np.ndarray | list[float]) -> float:
    """Smallest two-sided Wilcoxon p-value obtainable from differences with magnitudes ``|d|``.

    Equal to :math:`2^{1-n}` for ``n`` non-zero, untied differences (exact test); NaN for
    fewer than one non-zero difference.
    """
    d = np.abs(np.asarray(d, dtype=np.float64).ravel())
    if np.count_nonzero(d) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from scipy.stats import wilcoxon

        return float(wilcoxon(d, alternative="two-sided").pvalue)


def paired_wilcoxon(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (``a[i]`` and ``b[i]`` are one subject).

    Uses ``scipy.stats.wilcoxon(a - b, alternative="two-sided")`` with scipy's defaults, so its
    p-value equals scipy's. Degenerate inputs do not raise: ``n < 2`` gives NaN (no test), all
    differences zero gives statistic NaN and p = 1 (no evidence of a difference).
    """
    from scipy.stats import wilcoxon

    d = _differences(a, b)
    n, n_nonzero = int(d.size), int(np.count_nonzero(d))
    if n < 2:
        return WilcoxonResult(
            float("nan"), float("nan"), n, n_nonzero, float("nan"), f"n={n}: no test"
        )
    if n_nonzero == 0:
        return WilcoxonResult(
            float("nan"), 1.0, n, 0, float("nan"), f"n={n}: all differences are zero"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = wilcoxon(d, alternative="two-sided")
    floor = wilcoxon_floor(d)
    notes = []
    if n_nonzero < n:
        notes.append(f"{n - n_nonzero} zero differences dropped")
    if floor >= ALPHA:
        notes.append(f"n={n}: p cannot go below {floor:.3g}")
    return WilcoxonResult(
        float(res.statistic), float(res.pvalue), n, n_nonzero, floor, "; ".join(notes)
    )


def bootstrap_mean_ci(
    d: np.ndarray | list[float],
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the mean of ``d`` (resampling its entries).

    Deterministic for a given ``seed``. One value gives the degenerate interval ``(d, d)``;
    no values give ``(nan, nan)``.
    """
    d = np.asarray(d, dtype=np.float64).ravel()
    if not 0 < confidence < 1:
        raise InputError(f"confidence: {confidence} must be between 0 and 1")
    if n_resamples < 1:
        raise InputError(f"n_resamples: {n_resamples} must be at least 1")
    if d.size == 0:
        return float("nan"), float("nan")
    if not np.isfinite(d).all():
        raise InputError(f"bootstrap: {int((~np.isfinite(d)).sum())} values are NaN or Inf")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_resamples, d.size))
    means = d[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def holm_adjust(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm step-down adjusted p-values, in the order given; NaN stays NaN and is not counted.

    ``holm_adjust([0.01, 0.04, 0.03]) -> [0.03, 0.06, 0.06]``.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    if valid.size == 0:
        return out
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise InputError("Holm correction: p-values must lie in [0, 1]")
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


#: Columns of :func:`compare_to_best`'s table, in order.
COLUMNS = (
    "metric",
    "best",
    "model",
    "n",
    "best_mean",
    "model_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "statistic",
    "p_value",
    "p_holm",
    "significant",
    "p_floor",
    "note",
)


def compare_to_best(
    per_subject: pd.DataFrame,
    metrics: tuple[str, ...] = ("psnr", "ssim"),
    best: str | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Paired comparison of the best model with every other model, per metric.

    ``per_subject`` has one row per (model, subject) with columns ``model``, ``subject`` and
    each of ``metrics`` (the engine's ``per_subject.csv`` files, concatenated). ``best`` defaults
    to the model with the highest mean PSNR. Pairs are the subjects both models were evaluated
    on; pairs with a non-finite value (e.g. an infinite PSNR) are dropped and counted in
    ``note``. Returns one row per (metric, other model) with :data:`COLUMNS`: ``mean_diff`` is
    best minus model (positive: the best model is better for PSNR/SSIM), ``ci_low``/``ci_high``
    its bootstrap interval, ``statistic``/``p_value`` the Wilcoxon test, ``p_holm`` that p
    Holm-adjusted across the other models (per metric, :func:`holm_adjust`), ``significant``
    whether ``p_holm < alpha``, ``p_floor`` the smallest p these pairs could give. Fewer than
    two models give an empty table.
    """
    missing = {"model", "subject", *metrics} - set(per_subject.columns)
    if missing:
        raise InputError(f"per-subject table: missing columns {', '.join(sorted(missing))}")
    models = list(dict.fromkeys(per_subject["model"].astype(str)))
    if best is None and models:
        means = per_subject.groupby("model", sort=False)["psnr"].mean()
        best = str(means.idxmax())
    if best is not None and best not in models:
        raise InputError(f"best model '{best}' has no per-subject results")
    rows = []
    for metric in metrics:
        wide = per_subject.pivot_table(
            index="subject", columns="model", values=metric, aggfunc="first"
        )
        for model in models:
            if model == best:
                continue
            pair = wide[[best, model]].replace([np.inf, -np.inf], np.nan)
            n_all = int(pair.notna().any(axis=1).sum())
            pair = pair.dropna()
            d = (pair[best] - pair[model]).to_numpy()
            test = paired_wilcoxon(pair[best].to_numpy(), pair[model].to_numpy())
            low, high = bootstrap_mean_ci(d, n_resamples, confidence, seed)
            note = test.note
            if n_all > len(pair):
                dropped = f"{n_all - len(pair)} unpaired or non-finite subjects dropped"
                note = f"{dropped}; {note}" if note else dropped
            rows.append(
                {
                    "metric": metric,
                    "best": best,
                    "model": model,
                    "n": test.n,
                    "best_mean": float(pair[best].mean()) if len(pair) else float("nan"),
                    "model_mean": float(pair[model].mean()) if len(pair) else float("nan"),
                    "mean_diff": float(d.mean()) if d.size else float("nan"),
                    "ci_low": low,
                    "ci_high": high,
                    "statistic": test.statistic,
                    "p_value": test.pvalue,
                    "p_holm": float("nan"),
                    "significant": False,
                    "p_floor": test.p_floor,
                    "note": note,
                }
            )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for metric in metrics:
        at = table.index[table["metric"] == metric]
        table.loc[at, "p_holm"] = holm_adjust(table.loc[at, "p_value"].to_numpy(dtype=float))
    table["p_holm"] = table["p_holm"].astype(float)
    table["significant"] = (table["p_holm"] < alpha).astype(bool)
    return table
