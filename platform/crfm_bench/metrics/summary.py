"""Aggregate per-subject metrics into the leaderboard's mean, standard deviation and count.

The contract averages *per-volume* values over the test subjects (never a PSNR of the
pooled MSE), and reports the spread and the number of subjects alongside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crfm_bench.errors import InputError
from crfm_bench.metrics.spec import METRIC_NAMES

if TYPE_CHECKING:
    import pandas as pd


def summarise(per_subject: pd.DataFrame, by: str | list[str] = "model") -> pd.DataFrame:
    """Mean, std and n of each metric column of ``per_subject``, grouped by ``by``.

    ``per_subject``: one row per (``by``, subject) with metric columns named as in
    :data:`~crfm_bench.metrics.spec.METRIC_NAMES` (others are ignored). Returns one row per
    group, ``by`` as column(s), then ``<metric>_mean``, ``<metric>_std`` (sample standard
    deviation, ddof = 1; NaN for one subject) and ``<metric>_n`` (non-NaN values) for each
    metric present, in METRIC_NAMES order. An ``inf`` PSNR (a perfect volume) makes the
    mean ``inf``. Raises InputError if a ``by`` column or every metric column is missing.
    """
    import pandas as pd

    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in per_subject.columns]
    if missing:
        raise InputError(f"summarise: no column {missing[0]!r} to group by")
    metrics = [m for m in METRIC_NAMES if m in per_subject.columns]
    if not metrics:
        raise InputError(f"summarise: none of the metric columns {', '.join(METRIC_NAMES)}")
    grouped = per_subject.groupby(keys, sort=True)[metrics]
    parts = {"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}
    columns = {f"{m}_{stat}": parts[stat][m] for m in metrics for stat in ("mean", "std", "n")}
    return pd.DataFrame(columns).reset_index()
