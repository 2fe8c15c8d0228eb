"""Scale-out by configuration alone: the same ``crfm-bench run`` on an existing Ray cluster
(a head node started here with ``ray start``), chosen by ``--address`` / ``RAY_ADDRESS``,
logging to a real MLflow tracking server (started here on the loopback interface) chosen by
``MLFLOW_TRACKING_URI``. One run serves both: the head trains, the server tracks.

The head is safe as every Ray here must be: token authentication on (a token of its own,
handed to the client through ``RAY_AUTH_TOKEN``, as every node and driver of a cluster needs
it) and loopback only (Ray's single-machine mode, which the client on this machine shares).
"""

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
def ray_head(free_port):
    import secrets
    import shutil
    import tempfile

    # a short temp dir: Ray's Unix sockets live below it, and their paths are limited (~107)
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    port = free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback only
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            probe = subprocess.run(
                [str(BIN / "ray"), "status", f"--address={address}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:  # a loaded machine: not up yet, the deadline bounds
            probe = None
        if probe is not None and probe.returncode == 0 and "CPU" in probe.stdout:
            break
        if proc.poll() is not None:
            pytest.fail("ray start --head exited")
        time.sleep(1)
    else:
        proc.terminate()  # --block: stops the head's processes (a kill would orphan them)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
        pytest.fail("the Ray head did not come up within 120 s")
    yield address, env
    proc.terminate()  # --block: terminating it stops the processes of this cluster only
    proc.wait(timeout=60)
    shutil.rmtree(temp_dir, ignore_errors=True)


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
def test_run_on_an_existing_ray_cluster_logs_to_a_tracking_server(project, ray_head, mlflow_server):
    address, env = ray_head
    env = {**env, "MLFLOW_TRACKING_URI": mlflow_server}
    models = ("run", "--models", "edsr,tricubic,zerofill", "--address", address)
    res = project(*models, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"ray cluster at {address}" in res.stdout
    assert (project.dir / "runs" / "models" / "edsr" / "checkpoint" / "state.pt").is_file()
    assert not (project.dir / "mlflow.db").exists()  # nothing went to the local default
    client = MlflowClient(mlflow_server)

    def model_runs() -> list:
        runs = [
            r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
        ]
        return [r for r in runs if r.data.tags.get("crfm.kind") == "model"]

    runs = model_runs()
    assert sorted(r.data.tags.get("crfm.model") for r in runs) == ["edsr", "tricubic", "zerofill"]
    assert all(r.info.status == "FINISHED" for r in runs)
    child = next(r for r in runs if r.data.tags.get("crfm.model") == "tricubic")
    assert {"per_subject.csv", "slices.png"} <= {
        a.path for a in client.list_artifacts(child.info.run_id)
    }
    # the same configuration again reuses the server's finished runs
    again = project(*models, env=env)
    assert again.returncode == 0 and again.stdout.count("reused") == 3, again.stderr[-2000:]
    assert len(model_runs()) == 3

    # another machine (no local outputs) reuses them too: the output folder comes back
    # from the server's artifacts, whole
    folder = project.dir / "runs" / "models" / "tricubic"
    before = json.loads((folder / "metrics.json").read_text())
    shutil.rmtree(project.dir / "runs" / "models")
    third = project(*models, env=env)
    assert third.returncode == 0 and third.stdout.count("reused") == 3, third.stderr[-2000:]
    assert json.loads((folder / "metrics.json").read_text()) == before
    assert {"per_subject.csv", "slices.png", "history.csv", "predictions"} <= {
        p.name for p in folder.iterdir()
    }
    assert not list(folder.parent.glob(".*"))  # no download or staging folder left behind


def test_unreachable_ray_cluster_is_one_clear_error(project, free_port):
    port = free_port()
    res = project("run", "--models", "edsr", "--address", f"127.0.0.1:{port}", timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "ray.address" in res.stderr and "Traceback" not in res.stderr
