"""The repository's own DVC pipeline (data stages) on tiny parameters: repro, no-op, partial
rerun, push/pull. The training and report stages are covered by tests/test_dvc_benchmark.py."""

from __future__ import annotations

import shutil

import pytest
import yaml
from dvc_support import make_project, ran, sh


@pytest.fixture
def repo(tmp_path):
    """A git + DVC project holding this repository's dvc.yaml, .dvc config and sources."""
    return make_project(
        tmp_path / "repo",
        tmp_path / "store",
        {
            "synth": {
                "n_subjects": 4,
                "n_val": 1,
                "n_test": 1,
                "spacing_mm": 6.0,
                "contrasts": ["T2w", "PDw"],
            },
            "degrade": {"domains": ["kspace", "image"], "scales": ["2", "1x1x4"]},
        },
    )


def test_repro_noop_partial_rerun_and_remote_round_trip(repo):
    first = sh(repo, "dvc", "repro", "degrade")
    assert ran(first.stdout) == {
        "synthesize",
        "degrade@kspace-2",
        "degrade@kspace-1x1x4",
        "degrade@image-2",
        "degrade@image-1x1x4",
    }
    lr = repo / "data" / "lr" / "kspace-1x1x4"
    assert (lr / "manifest.csv").is_file() and len(list(lr.glob("*.nii.gz"))) == 4 * 2
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert "synthesize" in lock["stages"]

    second = sh(repo, "dvc", "repro", "degrade")
    assert ran(second.stdout) == set()

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["degrade"]["kspace"]["window"] = "hann"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = sh(repo, "dvc", "repro", "degrade")
    assert "synthesize" not in ran(third.stdout)
    assert {"degrade@kspace-2", "degrade@kspace-1x1x4"} <= ran(third.stdout)

    # push, lose everything local, pull back: same files, pipeline up to date
    sh(repo, "dvc", "push")
    before = (repo / "data" / "hr" / "manifest.csv").read_bytes()
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    sh(repo, "dvc", "pull", "--with-deps", "degrade")
    assert (repo / "data" / "hr" / "manifest.csv").read_bytes() == before
    assert ran(sh(repo, "dvc", "repro", "degrade").stdout) == set()
    status = sh(repo, "dvc", "status", "degrade")
    assert "up to date" in status.stdout.lower()
