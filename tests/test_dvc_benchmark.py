"""The whole benchmark as one DVC pipeline (tiny settings): an interrupted repro and its
rerun, a no-op, a partial rerun, metrics, plots, experiments, and push / fresh clone / pull."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml
from dvc_support import ENV, deep_update, make_project, ran, sh

TINY = {
    "synth": {
        "n_subjects": 5,
        "n_val": 1,
        "n_test": 2,
        "spacing_mm": 6.0,
        "contrasts": ["T2w", "PDw"],
    },
    "degrade": {"domains": ["kspace"], "scales": ["2"]},
    "train": {
        "epochs": 2,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "patch_size": 12,
        "val_patches": 2,
        "cpus_per_worker": 1,
    },
    "eval": {"window": 24},
    "ray": {"num_cpus": 2, "dashboard": False},
    # the pipeline's mechanics need a learned and a training-free model, not the whole fair
    # list (each learned model is one more Ray Train run per repro)
    "benchmark": {"models": ["edsr", "tricubic"]},
}


@pytest.fixture
def repo(tmp_path):
    return make_project(
        tmp_path / "repo",
        tmp_path / "store",
        deep_update(
            TINY,
            {
                "models": {
                    "edsr": {"options": {"n_feats": 8, "n_blocks": 2}},
                }
            },
        ),
    )


@pytest.mark.slow
def test_whole_benchmark_as_one_dvc_pipeline(repo, tmp_path):
    # the first repro is interrupted (Ctrl-C) during its edsr training; the rerun completes
    # and nothing half-written is trusted
    checkpoints = repo / "runs" / "ray"
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    t0 = time.time()
    while time.time() - t0 < 300 and not list(checkpoints.glob("edsr-*/checkpoint_*")):
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the repro ended before its edsr training wrote a checkpoint"
    # Ctrl-C: the terminal signals the whole foreground group (DVC waits out its stage's
    # command, which must get the signal itself)
    os.killpg(proc.pid, signal.SIGINT)
    interrupted_out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, err[-2000:]  # it was interrupted, not finished
    lock = repo / "dvc.lock"
    locked = yaml.safe_load(lock.read_text())["stages"] if lock.is_file() else {}
    assert "train@edsr" not in locked  # DVC recorded no half-done stage
    first = sh(repo, "dvc", "repro")
    assert {
        "synthesize",
        "degrade@kspace-2",
        "code",
        "train@edsr",
        "train@tricubic",
        "leaderboard",
        "report",
    } <= ran(interrupted_out) | ran(first.stdout)
    assert "train@edsr" in ran(first.stdout)
    assert (repo / "runs" / "models" / "edsr" / "metrics.json").is_file()
    html = (repo / "reports" / "index.html").read_text()
    assert "edsr" in html and "Wilcoxon" in html and "http://" not in html
    assert ran(sh(repo, "dvc", "repro").stdout) == set()
    assert "up to date" in sh(repo, "dvc", "status").stdout.lower()

    # a report wording change: the result-code hash stays, so no model retrains
    build = repo / "platform" / "crfm_bench" / "report" / "build.py"
    build.write_text(build.read_text() + "\n# wording\n")
    assert ran(sh(repo, "dvc", "repro").stdout) == {"code", "report"}

    metrics = sh(repo, "dvc", "metrics", "show", "--json").stdout
    assert '"psnr"' in metrics and "edsr" in metrics and "tricubic" in metrics
    sh(repo, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    assert (tmp_path / "plots" / "index.html").is_file()

    # an experiment from the command line changes one model's setting: only its stage, the
    # leaderboard and the report rerun; dvc exp show compares it
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    exp = sh(repo, "dvc", "exp", "run", "-S", "models.edsr.lr=0.003", "-n", "edsr-lr3")
    assert ran(exp.stdout) == {"train@edsr", "leaderboard", "report"}, exp.stdout[-2000:]
    assert "edsr-lr3" in sh(repo, "dvc", "exp", "show", "--csv").stdout

    # push everything; a fresh clone pulls it and has nothing to reproduce
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results")
    sh(repo, "dvc", "push")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, "dvc", "remote", "modify", "--local", "local", "url", str(tmp_path / "store"))
    sh(clone, "dvc", "pull")
    assert ran(sh(clone, "dvc", "repro").stdout) == set()
    assert (clone / "reports" / "index.html").is_file()
