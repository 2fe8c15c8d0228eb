"""The commands that span the engine and the report, one function each (the layer above
both: data -> degrade -> models -> engine -> report -> workflow -> cli).

* :func:`run`: ``crfm-bench run`` = train and evaluate (:func:`crfm_bench.engine.run.run_benchmark`,
  with a progress display and the per-model slice figure), then the leaderboard
  (:func:`crfm_bench.report.leaderboard.publish`: ``reports/leaderboard.*`` and MLflow), then
  the report (:func:`crfm_bench.report.build.build_report`: ``reports/index.{html,md}``).
* :func:`leaderboard`: ``crfm-bench leaderboard`` from MLflow, read-only on the data.
* :func:`cross`: ``crfm-bench run --test-data Y`` after the run: the trained models on Y's
  test split (:mod:`crfm_bench.engine.crossdata`), then their own leaderboard.
* :func:`score`: ``crfm-bench score``: external predictions scored
  (:mod:`crfm_bench.engine.score`), then the setting's leaderboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crfm_bench.config import Params


@dataclass
class RunResult:
    board: pd.DataFrame
    report: Path | None
    title: str


def run(
    params: Params,
    models: list[str] | None = None,
    force: bool = False,
    address: str | None = None,
    console=None,
    leaderboard: bool = True,
    report: bool = True,
    live: bool | None = None,
) -> RunResult:
    """Train/evaluate ``models``, then (unless turned off) the leaderboard and the report.
    ``live``: a live progress display (default: when the console is a terminal), else one
    line per epoch."""
    from rich.console import Console

    from crfm_bench.engine.progress import ProgressBoard
    from crfm_bench.engine.run import run_benchmark
    from crfm_bench.report import figures
    from crfm_bench.report import leaderboard as lb

    console = console or Console()
    scale = params.task.factors

    def slices(out_dir: Path, label: str):
        return figures.first_subject_slices(out_dir, label, scale)

    outcome = run_benchmark(
        params,
        models,
        force=force,
        address=address,
        console=console,
        board=ProgressBoard(console, live=live),
        figure_hook=slices,
    )
    board = pd.DataFrame()
    if leaderboard:
        board = lb.publish(outcome.setting, params, outcome.parent_id)
    path = None
    if report:
        from crfm_bench.report.build import build_report

        path = build_report(params)
    return RunResult(board, path, outcome.setting.experiment)


def leaderboard(params: Params) -> RunResult:
    """The setting's leaderboard from MLflow (``reports/leaderboard.*`` written). Reads only:
    no data is synthesised or degraded and no experiment created (missing data is an error
    naming the manifest; a missing experiment an empty table)."""
    from crfm_bench.engine.run import open_setting
    from crfm_bench.report import leaderboard as lb

    setting = open_setting(params, build_data=False)
    return RunResult(lb.publish(setting, params), None, setting.experiment)


def cross(
    params: Params,
    names: list[str],
    test_data: Path,
    force: bool = False,
    console=None,
    leaderboard: bool = True,
) -> pd.DataFrame:
    """Evaluate the trained ``names`` on ``test_data``; with ``leaderboard``, rank them in
    ``<reports_dir>/crossdata/leaderboard.*`` and log the table to the parent run (DVC's
    per-model stages pass False)."""
    import numpy as np

    from crfm_bench.engine.crossdata import evaluate_cross
    from crfm_bench.report import leaderboard as lb

    out = evaluate_cross(params, names, test_data, force, console)
    client = out.home.client
    board = lb.collect(client, out.cross.experiment_id, out.home.spec_hash)
    if leaderboard and not board.empty:
        lb.write(board, out.cross.reports_dir, title=out.title)
        client.log_table(
            out.parent_id, data=board.replace({np.nan: None}), artifact_file="leaderboard.json"
        )
    return board


def score(params: Params, pred_dir: Path, name: str, **kwargs) -> tuple[dict, pd.DataFrame]:
    """Score external predictions (:func:`crfm_bench.engine.score.score_predictions`, same
    keyword arguments), then publish the setting's leaderboard; (metrics.json, board)."""
    from crfm_bench.engine.score import score_predictions
    from crfm_bench.report import leaderboard as lb

    doc, setting = score_predictions(params, pred_dir, name, **kwargs)
    return doc, lb.publish(setting, params)
