"""The leaderboard: MLflow model runs of one setting as a ranked pandas table.

Only runs evaluated under the current metric contract (same ``metric_spec_hash``) are
ranked together; each model appears once (its newest finished run), so reruns add no
duplicate entries.

"mean ± std" is over test subjects for a one-seed result, and over seeds (of the per-seed
test means) for a multi-seed result (column ``seeds``); a std that is undefined (one subject
or one seed) is left out and the mean shown alone.

:func:`publish` writes the table to ``reports/`` and makes MLflow browsable: the parent
run's description (``mlflow.note.content``) is the table as the CLI prints it, and each
model run carries its rank (tag ``crfm.rank``, metric ``rank``) and the headline metrics
under short names (``psnr``, ``ssim``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from crfm_bench.atomic import atomic_write_text
from crfm_bench.errors import InputError
from crfm_bench.metrics import METRIC_NAMES
from crfm_bench.tracking import KIND_TAG, MODEL_TAG, RANK_TAG, RUN_KEY_TAG, SPEC_TAG

QUALITY = METRIC_NAMES
HEADLINE = ("psnr", "ssim")  # logged to each model run under these short names
EFFICIENCY = (
    "params",
    "macs_g",
    "train_gflop_step",
    "activation_mb",
    "train_seconds",
    "infer_seconds_per_volume",
)


def collect(client, experiment_id: str | None, spec_hash: str) -> pd.DataFrame:
    """One row per model: mean/std of each quality metric, efficiency, run ids; ranked by PSNR.
    No experiment (None): an empty table."""
    if experiment_id is None:
        return pd.DataFrame()
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
        m = read_metrics_json(folder / "metrics.json")
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


def read_metrics_json(path: Path) -> dict:
    """A model's ``metrics.json``; corrupt -> one InputError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); rerun crfm-bench run") from None
    if not isinstance(data, dict) or ("model" not in data and "test_psnr_mean" not in data):
        raise InputError(f"{path}: not a model result (no 'model' or 'test_psnr_mean')")
    return data


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
    row["seeds"] = m.get("seeds", 1)
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
    "train GFLOP/step",
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
            fmt_num(r["train_gflop_step"], ".1f"),
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


SHORT_HEADER = [
    "#",
    "model",
    "PSNR dB",
    "SSIM",
    "PSNR brain",
    "SSIM slices",
    "seeds",
    "params",
    "GMACs",
    "GFLOP/step",
    "train s",
    "infer s/vol",
]


def short_cells(board: pd.DataFrame) -> list[list[str]]:
    """The cells the CLI prints (and MLflow's run description shows) under :data:`SHORT_HEADER`."""
    return [
        [
            str(r["rank"]),
            shown_name(r),
            _pm(r, "psnr", 2),
            _pm(r, "ssim", 4),
            fmt_num(r["psnr_masked"], ".2f"),
            fmt_num(r["ssim_slice"], ".4f"),
            fmt_num(r.get("seeds", 1), ".0f"),
            fmt_num(r["params"], ",.0f"),
            fmt_num(r["macs_g"], ".2f"),
            fmt_num(r["train_gflop_step"], ".1f"),
            fmt_num(r["train_seconds"], ".0f"),
            fmt_num(r["infer_seconds_per_volume"], ".2f"),
        ]
        for _, r in board.iterrows()
    ]


def render(df: pd.DataFrame, title: str = "Leaderboard"):
    """A rich Table of the leaderboard (:func:`short_cells`)."""
    from rich.table import Table

    table = Table(title=title)
    for col in SHORT_HEADER:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in short_cells(df):
        table.add_row(*row)
    return table


def description(board: pd.DataFrame, title: str, spec_hash: str) -> str:
    """Markdown for an MLflow run description: the setting, the metric-contract hash and the
    table as the CLI prints it."""
    std_note = (
        "mean ± std over test subjects (over seeds where seeds > 1)"
        if not board.empty
        else "no ranked model"
    )
    lines = [
        f"**Leaderboard** of `{title}`",
        "",
        f"Metric contract `{spec_hash}`; {std_note}; ranked by PSNR.",
        "",
        "| " + " | ".join(SHORT_HEADER) + " |",
        "|" + "---|" * len(SHORT_HEADER),
    ]
    lines += [
        "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in short_cells(board)
    ]
    return "\n".join(lines) + "\n"


def publish(setting, params, parent_id: str | None = None) -> pd.DataFrame:
    """Collect the leaderboard of ``setting`` (an :class:`crfm_bench.engine.run.Setting`) from
    MLflow, write ``reports/leaderboard.{csv,md}`` and ``metrics.json``; with ``parent_id``
    log it to that run (artifacts, description) and tag each ranked model run with its rank
    and headline metrics. An empty table writes nothing."""
    from mlflow.entities import Metric, RunTag

    client = setting.client
    board = collect(client, setting.experiment_id, setting.spec_hash)
    if board.empty:
        return board
    write(board, params.paths.reports_dir, title=setting.experiment)
    now = int(pd.Timestamp.now().timestamp() * 1000)
    for _, r in board.iterrows():
        if not r["run_id"]:
            continue
        metrics = [Metric("rank", float(r["rank"]), now, 0)]
        metrics += [Metric(q, float(r[q]), now, 0) for q in HEADLINE if not pd.isna(r[q])]
        client.log_batch(r["run_id"], metrics=metrics, tags=[RunTag(RANK_TAG, str(r["rank"]))])
    if parent_id is not None:
        client.log_table(
            parent_id, data=board.replace({np.nan: None}), artifact_file="leaderboard.json"
        )
        client.log_text(parent_id, to_markdown(board, setting.experiment), "leaderboard.md")
        client.set_tag(
            parent_id,
            "mlflow.note.content",
            description(board, setting.experiment, setting.spec_hash),
        )
    return board


def crossdata_from_outputs(params, test_data: Path) -> pd.DataFrame:
    """The "trained on X, tested on Y" leaderboard from ``<runs_dir>/crossdata/*`` (no MLflow;
    what DVC versions), written to ``<reports_dir>/crossdata/leaderboard.{csv,md}``."""
    from crfm_bench.data.manifest import manifest_version
    from crfm_bench.errors import MissingInputError
    from crfm_bench.metrics import metric_spec, metric_spec_hash

    trained_on = manifest_version(params.paths.data_dir / "hr" / "manifest.csv")
    tested_on = manifest_version(Path(test_data) / "hr" / "manifest.csv")
    ranked, _ = select_model_dirs(
        params.paths.runs_dir / "crossdata",
        metric_spec_hash(metric_spec(params.eval.slice_axis)),
        tested_on,
        params.task.model_dump(mode="json"),
    )
    rows = [
        row_from_metrics(m["model"], m, m.get("run_key"), m.get("run_id"))
        for _, m in ranked
        if m.get("trained_on") == trained_on
    ]
    board = rank(rows)
    if board.empty:
        raise MissingInputError(
            f"{params.paths.runs_dir / 'crossdata'}: no model trained on {trained_on} and "
            f"tested on {tested_on} (crfm-bench run --test-data {test_data})"
        )
    t = params.task
    title = (
        f"trained on {trained_on}, tested on {tested_on}: {t.target}<-{t.reference or 'none'} "
        f"{t.domain} x{t.scale}"
    )
    write(board, params.paths.reports_dir / "crossdata", title=title)
    return board
