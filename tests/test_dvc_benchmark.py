"""The whole benchmark as one DVC pipeline (tiny settings): repro, partial rerun, metrics,
plots, experiments, an interrupted repro, and push / fresh clone / pull."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

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
    "ray": {"num_cpus": 2},
    # the pipeline's mechanics need three models, not the whole fair list (minet alone
    # tripled this test's time)
    "benchmark": {"models": ["crfm", "edsr", "tricubic"]},
}


def set_param(repo: Path, dotted: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *path, last = dotted.split(".")
    for p in path:
        node = node[p]
    node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


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
                    "crfm": {"options": {"n_feats": 8}},
                }
            },
        ),
    )


@pytest.mark.slow
def test_whole_benchmark_as_one_dvc_pipeline(repo, tmp_path):
    first = sh(repo, "dvc", "repro")
    assert {
        "synthesize",
        "degrade@kspace-2",
        "code",
        "train@crfm",
        "train@edsr",
        "train@tricubic",
        "leaderboard",
        "report",
    } <= ran(first.stdout)
    html = (repo / "reports" / "index.html").read_text()
    assert "crfm" in html and "Wilcoxon" in html and "http://" not in html
    assert ran(sh(repo, "dvc", "repro").stdout) == set()

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

    # an interrupted repro: the rerun completes and nothing half-written is trusted
    set_param(repo, "models.edsr.lr", 0.0015)
    checkpoints = repo / "runs" / "ray"
    before = set(checkpoints.glob("edsr-*/checkpoint_*"))  # the earlier runs' checkpoints
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
    # interrupt once this repro's edsr training has written its first checkpoint
    while time.time() - t0 < 300 and not set(checkpoints.glob("edsr-*/checkpoint_*")) - before:
        time.sleep(0.2)
    # Ctrl-C: the terminal signals the whole foreground group (DVC waits out its stage's
    # command, which must get the signal itself)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, err[-2000:]  # it was interrupted, not finished
    again = sh(repo, "dvc", "repro")
    assert "train@edsr" in ran(again.stdout) or "leaderboard" in ran(again.stdout)
    assert "up to date" in sh(repo, "dvc", "status").stdout.lower()
    assert (repo / "runs" / "models" / "edsr" / "metrics.json").is_file()

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
