"""MLflow tracking: store checks, experiments, run keys, leaderboard from a real SQLite store."""

from __future__ import annotations

import time

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
