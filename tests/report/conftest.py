"""A tiny finished benchmark (real ``crfm-bench run``, no training) shared by the report tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crfm_bench.config import Params, load_params

EXE = Path(sys.executable).with_name("crfm-bench")
MODELS = ("tricubic", "trilinear", "zerofill")

# 6 subjects at 4 mm, 3 test subjects, classical models only: about 30 s.
OVERRIDES = [
    "synth.n_subjects=6",
    "synth.n_val=1",
    "synth.n_test=3",
    "synth.spacing_mm=4",
    "synth.contrasts=[T2w,PDw]",
    "degrade.domains=[kspace]",
    "degrade.scales=['2']",
    "eval.window=24",
]


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory) -> Path:
    """Working directory after ``crfm-bench run --models tricubic,trilinear,zerofill``."""
    root = tmp_path_factory.mktemp("report_bench")
    (root / "params.yaml").write_text("seed: 0\n")
    args = [str(EXE), "run", "--params", "params.yaml", "--models", ",".join(MODELS)]
    for o in OVERRIDES:
        args += ["-S", o]
    res = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    for m in MODELS:
        assert (root / "runs" / "models" / m / "metrics.json").is_file(), m
    return root


def params_for(bench_dir: Path, runs_dir: Path, reports_dir: Path) -> Params:
    """The run's parameters with absolute paths (data shared, runs/reports where given)."""
    params = load_params(bench_dir / "params.yaml", OVERRIDES)
    params.paths.data_dir = bench_dir / "data"
    params.paths.runs_dir = runs_dir
    params.paths.reports_dir = reports_dir
    return params


@pytest.fixture
def bench_copy(bench_dir, tmp_path):
    """A private copy of the run's ``runs/models`` (safe to edit) and its parameters."""
    shutil.copytree(bench_dir / "runs" / "models", tmp_path / "runs" / "models")
    return params_for(bench_dir, tmp_path / "runs", tmp_path / "reports")


@pytest.fixture(scope="session")
def built(bench_dir, tmp_path_factory):
    """``build_report`` run once on the untouched benchmark: (params, path of index.html)."""
    from crfm_bench.report.build import build_report

    reports = tmp_path_factory.mktemp("report_out") / "reports"
    params = params_for(bench_dir, bench_dir / "runs", reports)
    return params, build_report(params)
