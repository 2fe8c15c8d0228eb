"""The leaderboard: MLflow model runs of one setting as a ranked pandas table.

Only runs evaluated under the current metric contract (same ``metric_spec_hash``) are
ranked together; each model appears once (its newest finished run), so reruns add no
duplicate entries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from crfm_bench.atomic import atomic_write_text
from crfm_bench.tracking import KIND_TAG, MODEL_TAG, RUN_KEY_TAG, SPEC_TAG

QUALITY = ("psnr", "ssim", "psnr_masked", "ssim_masked", "ssim_slice", "nmse")
EFFICIENCY = ("params", "macs_g", "activation_mb", "train_seconds", "infer_seconds_per_volume")


def collect(client, experiment_id: str, spec_hash: str) -> pd.DataFrame:
    """One row per model: mean/std of each quality metric, efficiency, run ids; ranked by PSNR."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{KIND_TAG}` = 'model' and tags.`{SPEC_TAG}` = '{spec_hash}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    rows, seen = [], set()
    for run in runs:
        model = run.data.tags.get(MODEL_TAG)
        if model in seen:
            continue
        seen.add(model)
        external = run.data.tags.get("crfm.external") == "true"
        rows.append(
            row_from_metrics(
                model,
                {**run.data.metrics, "external": external},
                run.data.tags.get(RUN_KEY_TAG),
                run.info.run_id,
            )
        )
    return rank(rows)


def select_model_dirs(
    models_dir: Path,
    spec_hash: str,
    dataset_version: str | None = None,
    task: dict | None = None,
) -> tuple[list[tuple[Path, dict]], list[tuple[str, str]]]:
    """The model folders under ``models_dir`` (sorted, hidden staging folders ignored) split
    into ranked ``(folder, metrics.json)`` and excluded ``(name, reason)``.

    Ranked together: the metric contract ``spec_hash`` and, when given, the dataset version
    and the setting ``task`` (target, reference, domain, scale) of the current params.
    """
    models_dir = Path(models_dir)
    folders = (
        sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if models_dir.is_dir()
        else []
    )
    ranked, excluded = [], []
    for folder in folders:
        if not (folder / "metrics.json").is_file():
            excluded.append((folder.name, "no metrics.json (unfinished run)"))
            continue
        m = json.loads((folder / "metrics.json").read_text())
        name = str(m.get("model") or folder.name)
        got = m.get("metric_spec_hash")
        data = m.get("dataset_version")
        if got != spec_hash:
            excluded.append((name, f"metric contract {got} differs from the current {spec_hash}"))
        elif dataset_version is not None and data != dataset_version:
            excluded.append(
                (name, f"dataset version {data} differs from the current {dataset_version}")
            )
        elif task is not None and m.get("task", task) != task:
            excluded.append((name, f"setting {m.get('task')} differs from the current {task}"))
        else:
            ranked.append((folder, m))
    return ranked, excluded


def from_model_dirs(
    models_dir: Path,
    spec_hash: str,
    task: dict | None = None,
    dataset_version: str | None = None,
) -> pd.DataFrame:
    """The same table from ``<runs_dir>/models/*/metrics.json`` (what DVC versions), no MLflow:
    the folders :func:`select_model_dirs` ranks together."""
    ranked, _ = select_model_dirs(models_dir, spec_hash, dataset_version, task)
    return rank(
        [row_from_metrics(m["model"], m, m.get("run_key"), m.get("run_id")) for _, m in ranked]
    )


def row_from_metrics(model: str, m: dict, key: str | None, run_id: str | None) -> dict:
    """A leaderboard row from a run's metrics (MLflow) or ``metrics.json``; missing -> NaN."""
    row: dict = {"model": model}
    for q in QUALITY:
        row[q] = m.get(f"test_{q}_mean", np.nan)
        row[f"{q}_std"] = m.get(f"test_{q}_std", np.nan)
    for e in EFFICIENCY:
        row[e] = m.get(e, np.nan)
    row["n_subjects"] = m.get("test_n_subjects", np.nan)
    row["external"] = bool(m.get("external", False))  # scored by `crfm-bench score`
    row["run_key"] = key
    row["run_id"] = run_id
    return row


def rank(rows: list[dict]) -> pd.DataFrame:
    """Rows as a table ranked by mean PSNR (best first), with a ``rank`` column."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.astype({c: float for c in (*QUALITY, *(f"{q}_std" for q in QUALITY), *EFFICIENCY)})
    df = df.sort_values("psnr", ascending=False, kind="stable", na_position="last")
    df = df.reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def metrics_json(df: pd.DataFrame) -> dict:
    """``{model: {psnr, ssim, ...}}`` for ``dvc metrics show``."""
    out = {}
    for _, r in df.iterrows():
        out[r["model"]] = {
            k: (None if pd.isna(r[k]) else round(float(r[k]), 6))
            for k in ("psnr", "ssim", "psnr_masked", "ssim_slice")
        }
    return out


HEADER = [
    "rank",
    "model",
    "PSNR (dB)",
    "SSIM",
    "PSNR brain (dB)",
    "SSIM brain",
    "SSIM slices",
    "NMSE",
    "params",
    "GMACs",
    "act. MB",
    "train s",
    "infer s/vol",
]


def fmt_num(v, fmt: str) -> str:
    return "" if v is None or pd.isna(v) else format(v, fmt)


def _pm(row, key: str, digits: int) -> str:
    v, s = row[key], row.get(f"{key}_std")
    if v is None or pd.isna(v):
        return ""
    return (
        f"{v:.{digits}f} ± {s:.{digits}f}"
        if s is not None and not pd.isna(s)
        else f"{v:.{digits}f}"
    )


def shown_name(row) -> str:
    """The model's name, marked when its predictions came from outside (``crfm-bench score``)."""
    return f"{row['model']} (external)" if bool(row.get("external", False)) else str(row["model"])


def cells(board: pd.DataFrame) -> list[list[str]]:
    """Formatted cells per row under :data:`HEADER`: mean ± std over subjects, then efficiency."""
    return [
        [
            str(r["rank"]),
            shown_name(r),
            _pm(r, "psnr", 2),
            _pm(r, "ssim", 4),
            _pm(r, "psnr_masked", 2),
            _pm(r, "ssim_masked", 4),
            _pm(r, "ssim_slice", 4),
            _pm(r, "nmse", 4),
            fmt_num(r["params"], ",.0f"),
            fmt_num(r["macs_g"], ".3f"),
            fmt_num(r["activation_mb"], ".1f"),
            fmt_num(r["train_seconds"], ".0f"),
            fmt_num(r["infer_seconds_per_volume"], ".2f"),
        ]
        for _, r in board.iterrows()
    ]


def to_markdown(df: pd.DataFrame, title: str = "") -> str:
    """Markdown table: mean +/- std over subjects, then the efficiency columns."""
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in cells(df)]
    return "\n".join(lines) + "\n"


def write(df: pd.DataFrame, reports_dir: Path, title: str = "") -> tuple[Path, Path]:
    """``reports/leaderboard.csv``, ``.md`` and ``metrics.json`` (for DVC), atomically."""
    reports_dir = Path(reports_dir)
    csv = atomic_write_text(reports_dir / "leaderboard.csv", df.to_csv(index=False))
    md = atomic_write_text(reports_dir / "leaderboard.md", to_markdown(df, title))
    atomic_write_text(
        reports_dir / "metrics.json", json.dumps(metrics_json(df), indent=2, sort_keys=True) + "\n"
    )
    return csv, md


def render(df: pd.DataFrame, title: str = "Leaderboard"):
    """A rich Table of the leaderboard."""
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "#",
        "model",
        "PSNR dB",
        "SSIM",
        "PSNR brain",
        "SSIM slices",
        "params",
        "GMACs",
        "train s",
        "infer s/vol",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    for _, r in df.iterrows():

        def f(v, fmt):
            return "" if v is None or pd.isna(v) else format(v, fmt)

        table.add_row(
            str(r["rank"]),
            shown_name(r),
            f"{r['psnr']:.2f} ± {r['psnr_std']:.2f}",
            f"{r['ssim']:.4f} ± {r['ssim_std']:.4f}",
            f(r["psnr_masked"], ".2f"),
            f(r["ssim_slice"], ".4f"),
            f(r["params"], ",.0f"),
            f(r["macs_g"], ".2f"),
            f(r["train_seconds"], ".0f"),
            f(r["infer_seconds_per_volume"], ".2f"),
        )
    return table
