"""The benchmark on a real distributed stack, on one machine and loopback only: a Ray cluster
of two nodes (token authentication on), MLflow on PostgreSQL with its artifacts in S3
(SeaweedFS), Ray Train checkpoints in the same bucket, DVC pushing to and pulling from it.

The project uses the repository's cluster profile (params/cluster.yaml) with only the
endpoints of this machine's services and tiny sizes filled in: configuration alone moves
the benchmark from a laptop to the cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scaleout_support import TINY, Project, cluster_profile, deep_update, wait_for

pytestmark = pytest.mark.slow

# long enough to kill a worker between its first checkpoint and the end of training
EPOCHS, STEPS = 4, 6


def cluster_params(stack, **extra) -> dict:
    tree = deep_update(cluster_profile(), TINY)
    return deep_update(
        tree,
        deep_update(
            {
                "ray": {"address": stack.ray.address},
                "train": {
                    "storage_path": stack.s3.ray_uri("ray"),
                    "num_workers": 2,
                    "cpus_per_worker": 1,
                    "use_gpu": False,
                    "epochs": EPOCHS,
                    "steps_per_epoch": STEPS,
                },
                "tracking": {"uri": stack.mlflow},
                "degrade": {"workers": 2},
            },
            extra,
        ),
    )


def model_runs(client: MlflowClient, model: str | None = None) -> list:
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    runs = [r for r in runs if r.data.tags.get("crfm.kind") == "model"]
    return [r for r in runs if model is None or r.data.tags.get("crfm.model") == model]


def registered_checkpoints(fs, prefix: str) -> list[str]:
    """Checkpoints Ray Train registered in the bucket (its checkpoint manager's snapshot)."""
    names: list[str] = []
    for snap in fs.glob(f"{prefix}/edsr-*/checkpoint_manager_snapshot.json"):
        try:
            state = json.loads(fs.cat(snap))
        except (OSError, ValueError):
            continue
        names += [r["checkpoint_dir_name"] for r in state.get("checkpoint_results", [])]
    return names


STATE_CODE = """
import json
from ray.util.state import list_actors, list_tasks
actors = list_actors(address="{address}", filters=[("class_name", "=", "RayTrainWorker")],
                     detail=True, limit=1000, raise_on_missing_output=False)
tasks = list_tasks(address="{address}", filters=[("func_or_class_name", "=", "degrade_volume")],
                   limit=1000, raise_on_missing_output=False)
print(json.dumps({{
    "workers": [[a["pid"], a["node_id"]] for a in actors],
    "degrade": [t["node_id"] for t in tasks],
}}))
"""


def test_benchmark_on_two_nodes_with_s3_and_postgres(stack, tmp_path):
    ray, s3 = stack.ray, stack.s3
    project = Project(tmp_path, {**ray.env})
    project.write(cluster_params(stack))
    fs = s3.fs()

    # --- a run on the two-node cluster; one training worker on the second node is killed
    t0 = time.monotonic()
    proc = project.start("run", "--models", "edsr,tricubic", "--address", ray.address)
    pid_dir = tmp_path / "runs" / "pids"
    seen: dict[int, str | None] = {}  # worker pid -> node (from the live process tree)

    def two_workers_and_a_checkpoint() -> bool:
        for f in pid_dir.glob("edsr-*/rank*.pid"):
            with_text = f.read_text().strip()
            if with_text and int(with_text) not in seen:
                seen[int(with_text)] = ray.node_of_pid(int(with_text))
        return len(seen) == 2 and bool(registered_checkpoints(fs, f"{s3.bucket}/ray"))

    wait_for(two_workers_and_a_checkpoint, 400, "2 training workers and a checkpoint in S3", proc)
    assert sorted(seen.values()) == ["head", "worker"], seen  # one DDP worker per node
    victim = next(pid for pid, node in seen.items() if node == "worker")
    os.kill(victim, signal.SIGKILL)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("crfm-bench run on the two-node cluster did not finish within 600 s")
    first_run_s = time.monotonic() - t0
    assert proc.returncode == 0, err[-4000:]
    assert f"ray cluster at {ray.address}" in out

    # Ray's own record: the training workers ran on both nodes, the degradation tasks too
    state = ray.query(STATE_CODE.format(address=ray.address))
    nodes = set(ray.node_ids.values())
    assert {node for _pid, node in state["workers"]} == nodes, state["workers"]
    assert victim in {pid for pid, _node in state["workers"]}
    assert set(state["degrade"]) == nodes, state["degrade"]

    # one MLflow run per model, the killed worker's group resumed from its checkpoint (read
    # back from the bucket) and finished the schedule
    client = MlflowClient(stack.mlflow)
    [edsr] = model_runs(client, "edsr")
    assert edsr.info.status == "FINISHED"
    resumed = [m.value for m in client.get_metric_history(edsr.info.run_id, "resumed_from")]
    assert max(resumed) >= 1, "the restarted worker group did not start from a checkpoint"
    steps = [m.value for m in client.get_metric_history(edsr.info.run_id, "step")]
    assert max(steps) == EPOCHS * STEPS
    assert len(model_runs(client)) == 2

    # checkpoints are in the bucket, not on the driver's disk
    assert registered_checkpoints(fs, f"{s3.bucket}/ray")
    assert fs.glob(f"{s3.bucket}/ray/edsr-*/checkpoint_*/state.pt")
    assert not (tmp_path / "runs" / "ray").exists()
    # tracking rows in PostgreSQL, artifacts in S3 (through the server)
    assert count_rows(stack.db, "edsr") == 1
    assert fs.glob(f"{s3.bucket}/mlflow/**/per_subject.csv")

    # --- the same configuration again, on another machine (no local outputs): nothing is
    # retrained, no run is added, and the output folders come back from S3 through MLflow
    folder = tmp_path / "runs" / "models" / "edsr"
    before = json.loads((folder / "metrics.json").read_text())
    shutil.rmtree(tmp_path / "runs" / "models")
    again = project.run("run", "--models", "edsr,tricubic", "--address", ray.address)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reused") == 2 and "restored" in again.stdout
    assert len(model_runs(client)) == 2 and count_rows(stack.db, "edsr") == 1
    assert json.loads((folder / "metrics.json").read_text()) == before
    assert any(folder.joinpath("predictions").glob("*_sr.nii.gz"))

    # --- the leaderboard is read back from the tracking server
    shutil.rmtree(tmp_path / "reports", ignore_errors=True)
    board = project.run("leaderboard")
    assert board.returncode == 0, board.stderr[-3000:]
    table = pd.read_csv(tmp_path / "reports" / "leaderboard.csv")
    assert sorted(table["model"]) == ["edsr", "tricubic"]
    assert table["rank"].tolist() == [1, 2] and table["psnr"].is_monotonic_decreasing

    print(f"[scaleout] two-node run with a killed worker: {first_run_s:.0f} s")


def count_rows(db_url: str, model: str) -> int:
    """Model runs of ``model`` in the tracking database itself (not through the server)."""
    import psycopg2

    dsn = db_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM tags t JOIN tags k ON t.run_uuid = k.run_uuid "
            "WHERE t.key = 'crfm.model' AND t.value = %s "
            "AND k.key = 'crfm.kind' AND k.value = 'model'",
            (model,),
        )
        return int(cur.fetchone()[0])


def test_dvc_pushes_to_and_pulls_from_s3(s3, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"DVC_NO_ANALYTICS": "1", "PATH": f"{Path(os.sys.executable).parent}:{env['PATH']}"}

    def sh(*cmd: str) -> str:
        res = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr[-2000:]}"
        return res.stdout

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    data = tmp_path / "data" / "hr"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-30, -40, -20]
    for i in range(3):
        vol = rng.random((12, 14, 10), dtype=np.float32)
        nib.save(nib.Nifti1Image(vol, affine), data / f"sub-{i:02d}_T2w.nii.gz")
    (data / "manifest.csv").write_text("subject,split\nsub-00,train\nsub-01,val\nsub-02,test\n")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    sh("dvc", "add", "data/hr")
    # the remote's location in the repository config; the keys in the local (untracked) one
    sh("dvc", "remote", "add", "-d", "store", f"s3://{s3.bucket}/dvc")
    sh("dvc", "remote", "modify", "store", "endpointurl", s3.endpoint)
    sh("dvc", "remote", "modify", "--local", "store", "access_key_id", s3.key)
    sh("dvc", "remote", "modify", "--local", "store", "secret_access_key", s3.secret)
    assert s3.secret not in (tmp_path / ".dvc" / "config").read_text()
    sh("dvc", "push")
    fs = s3.fs()
    assert len(fs.find(f"{s3.bucket}/dvc")) >= len(before) + 1  # the files and the .dir
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "data" / "hr")
    sh("dvc", "pull")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    vol = nib.load(data / "sub-01_T2w.nii.gz")
    assert np.allclose(vol.affine, affine)
