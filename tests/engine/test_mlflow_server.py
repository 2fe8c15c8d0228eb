"""Scale-out by configuration alone: the same ``crfm-bench run`` against a real MLflow tracking
server (started here on the loopback interface) chosen by ``MLFLOW_TRACKING_URI``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

BIN = Path(sys.executable).parent


@pytest.fixture
def mlflow_server(tmp_path, free_port):
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'srv.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 90:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not answer /health within 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_run_logs_to_a_tracking_server(project, mlflow_server):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    res = project("run", "--models", "tricubic,zerofill", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (project.dir / "mlflow.db").exists()  # nothing went to the local default
    client = MlflowClient(mlflow_server)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    models = {
        r.data.tags.get("crfm.model") for r in runs if r.data.tags.get("crfm.kind") == "model"
    }
    assert models == {"tricubic", "zerofill"}
    child = next(r for r in runs if r.data.tags.get("crfm.model") == "tricubic")
    assert {"per_subject.csv", "slices.png"} <= {
        a.path for a in client.list_artifacts(child.info.run_id)
    }
    # the same configuration again reuses the server's finished runs
    again = project("run", "--models", "tricubic,zerofill", env=env)
    assert again.returncode == 0 and again.stdout.count("reused") == 2

    # another machine (no local outputs) reuses them too: the output folder comes back
    # from the server's artifacts, whole
    folder = project.dir / "runs" / "models" / "tricubic"
    before = json.loads((folder / "metrics.json").read_text())
    shutil.rmtree(project.dir / "runs" / "models")
    third = project("run", "--models", "tricubic,zerofill", env=env)
    assert third.returncode == 0 and third.stdout.count("reused") == 2, third.stderr[-2000:]
    assert json.loads((folder / "metrics.json").read_text()) == before
    assert {"per_subject.csv", "slices.png", "history.csv", "predictions"} <= {
        p.name for p in folder.iterdir()
    }
    assert not list(folder.parent.glob(".*"))  # no download or staging folder left behind
