"""MLflow tracking: store checks, experiments, run keys, leaderboard from a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from crfm_bench.config import Params, TrackingConfig
from crfm_bench.errors import ServiceError
from crfm_bench.report import leaderboard
from crfm_bench.tracking import (
    KIND_TAG,
    MODEL_TAG,
    RUN_KEY_TAG,
    SPEC_TAG,
    check_tracking,
    experiment_name,
    get_or_create_experiment,
    run_key,
    tracking_uri,
)


def test_default_uri_is_sqlite_in_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(TrackingConfig()) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(TrackingConfig()) == "http://127.0.0.1:5999"
    assert tracking_uri(TrackingConfig(uri="sqlite:///x.db")) == "sqlite:///x.db"


def test_unreachable_server_is_one_clear_error():
    t0 = time.perf_counter()
    with pytest.raises(ServiceError, match=r"tracking server http://127.0.0.1:9: unreachable"):
        check_tracking("http://127.0.0.1:9", timeout_s=2)
    assert time.perf_counter() - t0 < 10


def test_file_store_refused(tmp_path):
    with pytest.raises(ServiceError, match="maintenance"):
        check_tracking(str(tmp_path / "mlruns"))


def test_run_key_is_stable_and_sensitive():
    a = {"model": "edsr", "train": {"lr": 1e-3}}
    assert run_key(a) == run_key({"train": {"lr": 1e-3}, "model": "edsr"})
    assert run_key(a) != run_key({"model": "edsr", "train": {"lr": 2e-3}})


def test_experiment_name_encodes_the_setting():
    p = Params()
    assert experiment_name(p, "abc") == "crfm-bench/abc/kspace-x2/T2w<-PDw"


def log_model_run(client, exp, model, psnr, spec="h1", key="k", status="FINISHED"):
    run = client.create_run(
        exp, tags={KIND_TAG: "model", MODEL_TAG: model, SPEC_TAG: spec, RUN_KEY_TAG: key}
    )
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[
            Metric("test_psnr_mean", psnr, now, 0),
            Metric("test_psnr_std", 0.5, now, 0),
            Metric("test_ssim_mean", 0.9, now, 0),
            Metric("test_ssim_std", 0.01, now, 0),
        ],
    )
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_leaderboard_ranks_dedups_and_respects_the_metric_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = get_or_create_experiment(client, "setting")
    log_model_run(client, exp, "edsr", 30.0, key="e1")
    newest_edsr = log_model_run(client, exp, "edsr", 31.0, key="e2")
    log_model_run(client, exp, "crfm", 32.0, key="c1")
    log_model_run(client, exp, "rcan", 40.0, spec="other-contract")
    log_model_run(client, exp, "minet", 45.0, status="KILLED")
    board = leaderboard.collect(client, exp, "h1")
    assert board["model"].tolist() == ["crfm", "edsr"]
    assert board["rank"].tolist() == [1, 2]
    assert board.loc[board.model == "edsr", "run_id"].item() == newest_edsr
    csv, md = leaderboard.write(board, tmp_path / "reports", "setting")
    text = md.read_text()
    assert "32.00 ± 0.50" in text and "| 1 | crfm |" in text
    assert csv.read_text().count("\n") == 3


def test_publish_makes_the_parent_description_the_rounded_table(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from crfm_bench.config import load_params
    from crfm_bench.tracking import RANK_TAG

    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = get_or_create_experiment(client, "setting")
    edsr = log_model_run(client, exp, "edsr", 31.123456, key="e2")
    crfm = log_model_run(client, exp, "crfm", 32.987654, key="c1")
    parent = client.create_run(exp, tags={KIND_TAG: "benchmark"}).info.run_id
    setting = SimpleNamespace(
        client=client, experiment_id=exp, experiment="setting", spec_hash="h1"
    )
    params = load_params(None, [f"paths.reports_dir={tmp_path / 'reports'}"])
    board = leaderboard.publish(setting, params, parent)
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert "`h1`" in note and "`setting`" in note
    assert "| 1 | crfm | 32.99 ± 0.50 |" in note and "32.987654" not in note
    for run_id, rank, psnr in ((crfm, "1", 32.987654), (edsr, "2", 31.123456)):
        data = client.get_run(run_id).data
        assert data.tags[RANK_TAG] == rank and data.metrics["rank"] == float(rank)
        assert data.metrics["psnr"] == pytest.approx(psnr) and "ssim" in data.metrics
    assert (tmp_path / "reports" / "leaderboard.md").is_file() and len(board) == 2


def test_a_corrupt_metrics_json_is_one_error_naming_the_file(tmp_path):
    from crfm_bench.errors import InputError

    folder = tmp_path / "models" / "edsr"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"model": "edsr", "test_psnr_mean": 3')
    with pytest.raises(InputError, match=r"models/edsr/metrics.json: not valid JSON"):
        leaderboard.from_model_dirs(tmp_path / "models", "h1")


def test_a_report_wording_change_keeps_the_run_key(tmp_path, monkeypatch):
    """code_version hashes the result code only: copy the package, change the report's text,
    the key stays; change the loop, it moves."""
    import shutil
    import subprocess
    import sys

    import crfm_bench

    pkg = tmp_path / "crfm_bench"
    shutil.copytree(
        Path(crfm_bench.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__")
    )

    def version() -> str:
        code = "from crfm_bench.tracking import code_version; print(code_version())"
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    before = version()
    build = pkg / "report" / "build.py"
    build.write_text(build.read_text().replace("Per-subject results", "Results per subject"))
    cli_like = pkg / "report" / "leaderboard.py"
    cli_like.write_text(cli_like.read_text() + "\n# wording\n")
    assert version() == before
    loop = pkg / "engine" / "step.py"
    loop.write_text(loop.read_text() + "\n# a change to the training step\n")
    assert version() != before
