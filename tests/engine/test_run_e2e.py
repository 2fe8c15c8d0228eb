"""``crfm-bench run`` end to end on tiny settings: real Ray Train, real MLflow, real NIfTI.

The suite's slow tests (one to five minutes each). Each real run serves several checks: one
project's sequence of runs (a full run whose process tree is sampled for its sockets, a
rerun that must neither retrain nor duplicate, seeds reusing the single-seed run, and the
ablation page on crfm and one ablation over two seeds); one training interrupted after a
checkpoint and resumed; one tune search of two-worker trials. And the errors that must stop
a run before any training starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from ray_sockets import assert_loopback_only, private_home_env, run_sampled
from servers import head_answers, stop_tree

EXE = Path(sys.executable).with_name("crfm-bench")


def history(path: Path, run_id: str, key: str) -> list[float]:
    client = MlflowClient(f"sqlite:///{path / 'mlflow.db'}")
    return [m.value for m in client.get_metric_history(run_id, key)]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended before {what}: {proc.returncode}\n{out}\n{err}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoints(path: Path, model: str) -> list[str]:
    """Checkpoints Ray Train has *registered* (listed in its checkpoint manager's snapshot);
    a checkpoint folder that is still being reported does not count."""
    import json

    names: list[str] = []
    for snap in (path / "runs" / "ray").glob(f"{model}-*/checkpoint_manager_snapshot.json"):
        try:
            state = json.loads(snap.read_text())
        except (OSError, ValueError):
            continue
        names += [r["checkpoint_dir_name"] for r in state.get("checkpoint_results", [])]
    return names


def start(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EXE), *args], cwd=path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
@pytest.mark.timeout(
    1800
)  # five runs in one test (about 5 min quiet); the suite's 900 s is per run
def test_run_trains_evaluates_tracks_and_reruns_without_duplicates(project, mlflow_runs, tmp_path):
    # One project, one sequence of runs, each step checked on the outputs of the one before:
    # a full run (its process tree sampled: every socket on loopback), a rerun that reuses
    # everything, seeds that reuse the single-seed run, a changed setting for one model.
    # The learned models train with DDP on two workers, with the dashboard on: the sockets
    # sampled are those of Ray, the dashboard, the agents, the Train workers and their
    # rendezvous.
    project.write(
        {
            "synth": {"n_test": 2},  # two test subjects: the smallest n with an interval
            "train": {"num_workers": 2},
            "ray": {"dashboard": True},
            "models": {ABLATION: {"options": {"n_feats": 8}}},
        }
    )
    res, seen = run_sampled(
        [str(EXE), "run", "--models", "edsr,crfm,tricubic"],
        project.dir,
        private_home_env(tmp_path),  # the run's Ray token is made in this HOME
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert_loopback_only(seen, tmp_path)
    # Ray Train's actors, seen by their gRPC sockets: the controller ran, the pre-emption
    # watcher is off on the local Ray
    names = {name for name, _, _ in seen}
    assert any(n.startswith("ray::TrainController") for n in names), names
    assert not any(n.startswith("ray::PreemptionWatcher") for n in names), names
    assert "mlflow ui --backend-store-uri sqlite:///" in res.stdout
    # progress without a terminal: one line per epoch of each trained model (from the
    # Ray Train controller's reports, relayed to the driver)
    for model in ("edsr", "crfm"):
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith(f"{model}: epoch ")]
        assert [ln.split()[2] for ln in lines] == ["1/2", "2/2"], res.stdout
        assert all(" val PSNR " in ln and " ETA " in ln for ln in lines)
    # the run leaves its report and says where
    assert (project.dir / "reports" / "index.html").is_file()
    assert (project.dir / "reports" / "index.md").is_file()
    assert f"report: {(project.dir / 'reports' / 'index.html').resolve()}" in res.stdout

    board = pd.read_csv(project.dir / "reports" / "leaderboard.csv")
    assert sorted(board["model"]) == ["crfm", "edsr", "tricubic"]
    assert board["psnr"].is_monotonic_decreasing and board["rank"].tolist() == [1, 2, 3]
    assert (board["psnr"] > 5).all() and (board["ssim"] <= 1).all()
    assert board.loc[board.model == "tricubic", "params"].item() == 0
    assert (board.loc[board.model != "tricubic", "params"] > 0).all()

    runs = mlflow_runs(project.dir)
    children = [r for r in runs if r.data.tags.get("crfm.kind") == "model"]
    parents = [r for r in runs if r.data.tags.get("crfm.kind") == "benchmark"]
    assert len(children) == 3 and len(parents) == 1
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert len(child.data.tags["metric_spec_hash"]) == 12
        assert "test_psnr_mean" in child.data.metrics
    note = parents[0].data.tags["mlflow.note.content"]
    assert parents[0].data.tags["metric_spec_hash"] in note
    for child in children:
        rank = board.loc[board.model == child.data.tags["crfm.model"], "rank"].item()
        assert child.data.tags["crfm.rank"] == str(rank)
        assert {"psnr", "ssim", "rank"} <= set(child.data.metrics)
        assert f"| {rank} | {child.data.tags['crfm.model']} |" in note
    edsr = next(r for r in children if r.data.tags["crfm.model"] == "edsr")
    # DDP: the controller logs each epoch once (rank 0 reports the checkpoints); two distinct
    # worker processes each drew their shard of the patches
    assert len(history(project.dir, edsr.info.run_id, "val_psnr")) == 2
    pids = list((project.dir / "runs" / "pids").glob("edsr-*/rank*.pid"))
    assert sorted(p.name for p in pids) == ["rank0.pid", "rank1.pid"]
    assert len({p.read_text() for p in pids}) == 2
    client = MlflowClient(f"sqlite:///{project.dir / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(edsr.info.run_id)}
    assert {"per_subject.csv", "slices.png", "checkpoint"} <= artifacts

    # predictions are NIfTI on the HR grid with the HR affine
    pred = next((project.dir / "runs" / "models" / "edsr" / "predictions").glob("*_sr.nii.gz"))
    subject = pred.name.removesuffix("_sr.nii.gz")
    hr = nib.load(project.dir / "data" / "hr" / f"{subject}_T2w.nii.gz")
    sr = nib.load(pred)
    assert sr.shape == hr.shape and np.allclose(sr.affine, hr.affine)

    # same configuration again: nothing retrained, no duplicate entries
    again = project("run", "--models", "edsr,crfm,tricubic")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reused") == 3
    assert (
        len([r for r in mlflow_runs(project.dir) if r.data.tags.get("crfm.kind") == "model"]) == 3
    )
    assert len(pd.read_csv(project.dir / "reports" / "leaderboard.csv")) == 3

    # seeds: crfm's seed 1 is the single-seed run above (reused, not retrained), its seed 2
    # is new, and so are both seeds of one capacity-matched ablation
    single = pd.read_csv(project.dir / "runs" / "models" / "crfm" / "per_subject.csv")
    res = project("run", "--models", f"crfm,{ABLATION}", "--seeds", "2", "--no-report")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("reused") == 1  # seed 1 is the single-seed run: not retrained
    assert [
        ln.split()[4] for ln in res.stdout.splitlines() if ln.startswith("crfm (seed 1): epoch")
    ] == ["1/2", "2/2"]

    out = project.dir / "runs" / "models" / "crfm"
    seed_metrics = [json.loads((out / f"seed-{k}" / "metrics.json").read_text()) for k in (1, 2)]
    assert [m["seed"] for m in seed_metrics] == [0, 1]
    agg = json.loads((out / "metrics.json").read_text())
    means = [m["test_psnr_mean"] for m in seed_metrics]
    assert agg["seeds"] == 2 and agg["test_psnr_mean"] == pytest.approx(np.mean(means))
    assert agg["test_psnr_std"] == pytest.approx(np.std(means, ddof=1))
    per_subject = pd.read_csv(out / "per_subject.csv")
    assert per_subject["subject"].tolist() == single["subject"].tolist()
    seed2 = pd.read_csv(out / "seed-2" / "per_subject.csv")
    assert per_subject["psnr"].to_numpy() == pytest.approx(
        (single["psnr"] + seed2["psnr"]).to_numpy() / 2
    )

    runs = mlflow_runs(project.dir, "crfm")
    aggregate = [r for r in runs if r.data.tags.get("seeds") == "2"]
    seeds = [r for r in runs if r.data.tags.get("crfm.kind") == "seed"]
    assert len(aggregate) == 1 and len(seeds) == 1  # seed 2 new, seed 1 reused
    assert seeds[0].data.tags["mlflow.parentRunId"] == aggregate[0].info.run_id
    assert seeds[0].data.tags["crfm.seed"] == "1"
    assert seed_metrics[0]["run_id"] in aggregate[0].data.params["seed_runs"]
    board = pd.read_csv(project.dir / "reports" / "leaderboard.csv")
    assert board.loc[board.model == "crfm", "seeds"].item() == 2
    assert board.loc[board.model == "crfm", "psnr_std"].item() == pytest.approx(
        agg["test_psnr_std"]
    )
    # the other models' results are untouched: edsr is still its single-seed run
    assert len(mlflow_runs(project.dir, "edsr")) == 1
    assert board.loc[board.model == "edsr", "seeds"].item() == 1

    check_ablation_page(project)


ABLATION = "crfm-nograd"  # one ablation: the page's machinery, not the whole study


def expected(models: Path, ablation: str, metric: str) -> tuple[float, list[float]]:
    """Mean over subjects of the seed-averaged paired difference, and the per-seed means,
    straight from the engine's files."""
    diffs = []
    for k in (1, 2):
        ref = pd.read_csv(models / "crfm" / f"seed-{k}" / "per_subject.csv")
        abl = pd.read_csv(models / ablation / f"seed-{k}" / "per_subject.csv")
        pair = ref.merge(abl, on="subject", suffixes=("_r", "_a"))
        assert len(pair) == len(ref) == 2
        diffs.append(pair.set_index("subject")[f"{metric}_r"] - pair[f"{metric}_a"].values)
    per_subject = pd.concat(diffs, axis=1).mean(axis=1)
    return float(per_subject.mean()), [float(d.mean()) for d in diffs]


def files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def check_ablation_page(project) -> None:
    """``crfm-bench ablation`` on the run's crfm and ablation seeds: the page, its numbers
    recomputed here from the per-seed ``per_subject.csv`` files, and the inputs it must refuse
    (exit 2, one line, nothing written)."""
    res = project("ablation", "--ablations", ABLATION, "--seeds", "2", timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    reports = project.dir / "reports"
    doc = json.loads((reports / "ablation.json").read_text())
    assert doc["reference"] == "crfm" and doc["seeds"] == [0, 1] and doc["n_subjects"] == 2
    assert [p["model"] for p in doc["parts"]] == [ABLATION]
    runs = project.dir / "runs" / "models"
    for part in doc["parts"]:
        for metric in ("psnr", "ssim"):
            e = part[metric]
            mean, per_seed = expected(runs, part["model"], metric)
            assert e["mean"] == pytest.approx(mean, abs=1e-9)
            assert e["per_seed"] == pytest.approx(per_seed, abs=1e-9)
            assert e["ci_low"] <= e["mean"] <= e["ci_high"]
            assert e["n_subjects"] == 2 and e["n_seeds"] == 2
            want = "helps" if e["ci_low"] > 0 else "hurts" if e["ci_high"] < 0 else "no evidence"
            assert e["verdict"] == want
    # capacity: the ablation within 3 % of crfm's parameters, shown on the page
    n_crfm = doc["params"]["crfm"]
    assert n_crfm > 0 and abs(doc["params"][ABLATION] / n_crfm - 1) < 0.03
    md = (reports / "ablation.md").read_text()
    html = (reports / "ablation.html").read_text()
    assert "Student's t" in md and "subjects are the independent unit" in md
    assert f"{int(n_crfm):,}" in md and f"{int(n_crfm):,}" in html
    assert f"reference gradient branch G | {ABLATION}" in md
    assert "<table>" in html and 'src="http' not in html  # one self-contained file

    # refused inputs: one line naming the file or option, exit 2, the page untouched
    before = files(reports)
    cases = [
        (("--seeds", "2"), "runs/models/crfm-noref: no finished result"),  # default: all five
        (("--ablations", ABLATION), "trained with seeds [0, 1], expected [0]"),
        (("--ablations", ABLATION, "--seeds", "2", "-S", "task.scale=1x1x4"), "setting"),
        (("--ablations", ABLATION, "--seeds", "2", "-S", "eval.slice_axis=1"), "contract"),
        (("--ablations", f"crfm,{ABLATION}", "--seeds", "2"), "--ablations: crfm is the reference"),
    ]
    missing_seed = (("--ablations", ABLATION, "--seeds", "2"), "seed-2/metrics.json: not found")
    for k, (args, message) in enumerate([*cases, missing_seed]):
        if k == len(cases):  # the last case: a seed folder gone
            shutil.move(runs / ABLATION / "seed-2", project.dir / "seed-2")
        bad = project("ablation", *args, timeout=120)
        assert bad.returncode == 2, (args, bad.stdout[-1000:], bad.stderr[-2000:])
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, bad.stderr)
        assert files(reports) == before


# Long enough to act between checkpoints (a few seconds per epoch).
SLOW_TRAIN = {
    "train": {"epochs": 8, "steps_per_epoch": 40, "patch_size": 24},
    "models": {"edsr": {"options": {"n_blocks": 4, "n_feats": 16}}},
}


@pytest.mark.slow
def test_an_interrupted_run_finishes_on_rerun_from_its_checkpoint(project, mlflow_runs):
    # The run interrupted (Ctrl-C) after a checkpoint: the rerun resumes the same MLflow run
    # from Ray's checkpoint and finishes it, without a duplicate result. (A worker killed
    # mid-run, which Ray Train restarts from the last checkpoint, is checked on the two-node
    # cluster: tests/scaleout.)
    project.write(SLOW_TRAIN)
    proc = start(project.dir, "run", "--models", "edsr,tricubic")
    pid_files = lambda: list((project.dir / "runs" / "pids").glob("edsr-*/rank0.pid"))  # noqa: E731
    wait_for(lambda: pid_files() and checkpoints(project.dir, "edsr"), 300, "a checkpoint", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "interrupted" in err or proc.returncode in (130, -2), (proc.returncode, out[-500:])
    assert proc.returncode != 0
    runs = mlflow_runs(project.dir, "edsr")
    assert len(runs) == 1 and runs[0].info.status != "FINISHED"
    steps_before = history(project.dir, runs[0].info.run_id, "step")
    assert max(steps_before) < 8 * 40, "interrupted too late: the run had finished"

    res = project("run", "--models", "edsr,tricubic")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming interrupted run" in res.stdout
    runs = mlflow_runs(project.dir, "edsr")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = history(project.dir, runs[0].info.run_id, "step")
    assert max(steps) == 8 * 40
    # the rerun went on from a checkpoint, not from scratch: it logged fewer than 8 epochs
    assert len(steps) - len(steps_before) < 8
    board = pd.read_csv(project.dir / "reports" / "leaderboard.csv")
    assert sorted(board["model"]) == ["edsr", "tricubic"]


def test_unreachable_tracking_server_stops_before_any_work(project):
    res = project("run", "--models", "edsr", "-S", "tracking.uri=http://127.0.0.1:9")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "tracking server http://127.0.0.1:9: unreachable" in res.stderr
    assert not (project.dir / "data").exists() and not (project.dir / "runs").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--models", "edsr,srgan"], "unknown model 'srgan'"),
        (["--models", "crfm", "-S", "task.reference=null"], "model 'crfm' needs a reference"),
        (["--models", "edsr", "-S", "task.scale=1.5"], "task.scale"),
        (["--models", "edsr", "-S", "models.edsr.options.n_feats=-3"], "n_feats"),
    ],
)
def test_bad_run_requests_exit_2_with_one_line(project, args, needle):
    res = project("run", *args)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "INFO" not in ln]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not (project.dir / "runs" / "ray").exists()


@pytest.fixture
def other_ray_on_host(free_port, tmp_path_factory):
    """Someone else's Ray on this machine, started the plain way (``ray start --head``, default
    temp dir, so it is the cluster ``ray.init()`` and Ray's state API would auto-detect),
    with the user's own token: the situation in which the suite used to hang under load."""
    from crfm_bench.stackenv import ensure_ray_token

    ensure_ray_token()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # loopback only
    env.pop("RAY_ADDRESS", None)
    ports = [free_port() for _ in range(6)]
    log = tmp_path_factory.mktemp("other-ray") / "ray-start.log"  # its output
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={ports[0]}",
            "--num-cpus=1",
            f"--dashboard-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}",
            f"--dashboard-agent-grpc-port={ports[3]}",
            f"--metrics-export-port={ports[4]}",
            f"--runtime-env-agent-port={ports[5]}",
        ],
        env=env,
        stdout=(out := log.open("wb")),
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{ports[0]}"
    if not head_answers(proc, address, env, time.monotonic() + 120, log):
        stop_tree(proc)  # --block: SIGTERM stops that cluster's processes
        pytest.fail("the other Ray (ray start --head) did not come up within 120 s")
    yield address
    stop_tree(proc)  # --block: SIGTERM stops that cluster's processes only
    out.close()
    current = Path("/tmp/ray/ray_current_cluster")  # written by that `ray start`: ours to remove
    if current.is_file() and current.read_text().strip() == address:
        current.unlink()


@pytest.mark.slow
def test_tune_trials_each_drive_a_two_worker_ray_train_run(project, mlflow_runs, other_ray_on_host):
    # One search checks the whole of tune: ASHA trials in MLflow under one parent, and the
    # best trial written as a params file that `run` accepts.
    # Train V2 in Tune: each trial launches a TorchTrainer of two DDP workers and forwards its
    # reports through TuneReportCallback. ASHA stops trials before their function returns (at
    # the grace period or at max_t); the next trial must still get the workers' CPUs (without
    # Ray's state API the stopped trial's placement group leaked and the search hung).
    # Another Ray runs on the host meanwhile: the state API that frees a stopped trial's
    # workers must ask crfm-bench's own Ray, not auto-detect that one (issue 11's hang).
    import yaml

    from crfm_bench.config import load_params

    project.write(
        {
            "train": {"num_workers": 2},
            "ray": {"dashboard": True},  # the state API that frees a stopped trial's workers
            "tune": {
                "model": "edsr",
                "num_samples": 2,
                "max_epochs": 2,
                "grace_period": 1,
                "space": {"lr": {"loguniform": [0.0003, 0.003]}, "n_feats": {"choice": [4, 8]}},
            },
        }
    )
    res = project("tune", timeout=480)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "a Ray Train run of 2 workers per trial" in res.stdout.replace("\n", " ")
    [search] = (project.dir / "runs" / "tune").glob("tune-edsr-*/pids")
    trials = sorted(search.iterdir())
    assert len(trials) == 2
    for trial in trials:
        pids = sorted(trial.glob("rank*.pid"))
        assert [p.name for p in pids] == ["rank0.pid", "rank1.pid"]
        assert len({p.read_text() for p in pids}) == 2
    runs = mlflow_runs(project.dir)
    parent = [r for r in runs if r.data.tags.get("crfm.kind") == "tune"]
    trial_runs = [r for r in runs if r.data.tags.get("crfm.kind") == "trial"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert len(trial_runs) == 2
    assert all(t.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for t in trial_runs)
    epochs = sorted(len(history(project.dir, r.info.run_id, "val_psnr")) for r in trial_runs)
    assert epochs[-1] == 2 and epochs[0] >= 1  # the best ran the whole budget

    best_file = project.dir / "reports" / "tune" / "edsr-best.yaml"
    assert f"wrote {best_file.relative_to(project.dir)}" in res.stdout.replace("\n", "")
    tuned = load_params(best_file)
    assert 0.0003 <= tuned.models["edsr"].lr <= 0.003
    assert tuned.models["edsr"].options["n_feats"] in (4, 8)
    tree = yaml.safe_load(best_file.read_text())
    assert tree["models"]["edsr"]["epochs"] is None  # full schedule of train.epochs
    assert tuned.train == load_params(project.dir / "params.yaml").train


def test_worker_group_larger_than_the_local_ray_stops_before_any_work(project):
    # (with the dashboard: tune with several workers per trial needs it, and says so first)
    project.write(
        {
            "train": {"num_workers": 2, "cpus_per_worker": 2},
            "ray": {"num_cpus": 3, "dashboard": True},
        }
    )
    for command in (["run", "--models", "edsr"], ["tune", "--model", "edsr"]):
        res = project(*command)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, res.stderr
        assert "train.num_workers 2 x train.cpus_per_worker 2" in lines[0]
        assert "4 CPU" in lines[0] and "3 CPU" in lines[0]
        assert not (project.dir / "data").exists() and not (project.dir / "runs").exists()
