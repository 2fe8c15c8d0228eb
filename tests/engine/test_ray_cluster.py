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
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from servers import head_answers, stop_tree

BIN = Path(sys.executable).parent


def _start_head(env: dict, port: int, temp_dir: Path, log) -> subprocess.Popen:
    return subprocess.Popen(
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
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop_head(proc: subprocess.Popen) -> None:
    stop_tree(proc)  # --block: SIGTERM stops the processes of this cluster only


@pytest.fixture
def ray_head(free_port):
    import secrets
    import shutil
    import tempfile

    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback only
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    # Ray gives its raylet a fixed 30 s to register at startup; on a busy shared machine
    # that can fail, so a head that exits while starting is started once more
    log = tempfile.NamedTemporaryFile()  # ray start's output, shown if the head does not come up
    for attempt in (1, 2):
        # a short temp dir: Ray's Unix sockets live below it, and their paths are limited
        temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        address = f"127.0.0.1:{free_port()}"
        proc = _start_head(env, int(address.rsplit(":", 1)[1]), temp_dir, log)
        up = head_answers(proc, address, env, time.monotonic() + 240, Path(log.name))
        if up:
            break
        exited = proc.poll() is not None  # failed while starting, rather than too slow
        _stop_head(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if not exited or attempt == 2:
            log.seek(0)
            text = log.read().decode(errors="replace")[-2000:]
            log.close()
            pytest.fail(f"the Ray head did not answer `ray status` within 240 s:\n{text}")
    log.close()
    yield address, env
    _stop_head(proc)
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


def test_unreachable_ray_cluster_is_one_clear_error(project, free_port):
    port = free_port()
    res = project("run", "--models", "edsr", "--address", f"127.0.0.1:{port}", timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "ray.address" in res.stderr and "Traceback" not in res.stderr


# A plain actor that holds every CPU of the cluster (detached: it outlives this driver and
# ends with the head).
HOG = textwrap.dedent(
    """
    import sys, ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    cpus = ray.cluster_resources()["CPU"]

    @ray.remote(num_cpus=cpus)
    class Hog:
        def ready(self):
            return True

    hog = Hog.options(name="hog", lifetime="detached").remote()
    ray.get(hog.ready.remote(), timeout=120)
    print("HOLDING", ray.available_resources().get("CPU", 0.0))
    """
)


@pytest.mark.slow
def test_run_on_an_existing_ray_cluster_with_a_tracking_server(project, ray_head, mlflow_server):
    # One head serves two checks. First the run: the head trains, the server tracks, and
    # another machine (no local outputs) reuses the finished runs. Then the bound: once other
    # Ray work holds every CPU, a run that needs a worker group ends in one line.
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
    # another machine (no local outputs) reuses the server's finished runs: the output
    # folder comes back from the server's artifacts, whole
    folder = project.dir / "runs" / "models" / "tricubic"
    before = json.loads((folder / "metrics.json").read_text())
    shutil.rmtree(project.dir / "runs" / "models")
    again = project(*models, env=env)
    assert again.returncode == 0 and again.stdout.count("reused") == 3, again.stderr[-2000:]
    assert len(model_runs()) == 3
    assert json.loads((folder / "metrics.json").read_text()) == before
    assert {"per_subject.csv", "slices.png", "history.csv", "predictions"} <= {
        p.name for p in folder.iterdir()
    }
    assert not list(folder.parent.glob(".*"))  # no download or staging folder left behind

    # On a cluster crfm-bench does not check that the group fits (an autoscaler may add
    # nodes), so Ray Train's own start timeout, tried START_ATTEMPTS times, is the bound.
    from crfm_bench.engine.trainer import START_ATTEMPTS

    hog = subprocess.run(
        [sys.executable, "-c", HOG, address], env=env, capture_output=True, text=True, timeout=180
    )
    assert "HOLDING 0.0" in hog.stdout, hog.stdout + hog.stderr[-2000:]
    # The driver's value reaches Ray Train's controller (Ray Train propagates its RAY_TRAIN_*
    # variables to the controller actor's runtime env). The bound shows it: with Ray's
    # default (60 s) the tries alone would take 300 s.
    edsr = json.loads((project.dir / "runs" / "models" / "edsr" / "metrics.json").read_text())
    timeout_s, bound_s = 2, 280
    try:
        res = project(
            *("run", "--models", "edsr", "--address", address),
            *("-S", "models.edsr.lr=0.002"),  # a new result: it must train
            env={**env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(timeout_s)},
            timeout=bound_s,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"crfm-bench run did not end within {bound_s} s of its worker group's wait")
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("crfm-bench: error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert (
        f"worker group (1 worker(s) x 1 CPU) got no placement group within "
        f"{START_ATTEMPTS * timeout_s} s" in errors[0]
    ), errors[0]
    assert "ray status" in errors[0]
    # nothing partial: the earlier result stands, no new finished run
    assert (
        json.loads((project.dir / "runs" / "models" / "edsr" / "metrics.json").read_text()) == edsr
    )
    assert [r.info.status for r in model_runs()].count("FINISHED") == 3
    assert not list((project.dir / "runs" / "models").glob(".*"))
