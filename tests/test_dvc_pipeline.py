"""The repository's own DVC pipeline (data stages) on tiny parameters: repro, no-op, partial
rerun, push/pull. The training and report stages are covered by tests/test_dvc_benchmark.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


@pytest.fixture
def repo(tmp_path):
    """A git + DVC project holding this repository's dvc.yaml, .dvc config and sources."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(
        ROOT / "platform", root / "platform", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synth"].update(
        n_subjects=4, n_val=1, n_test=1, spacing_mm=6.0, contrasts=["T2w", "PDw"]
    )
    params["degrade"]["domains"] = ["kspace", "image"]
    params["degrade"]["scales"] = ["2", "1x1x4"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "remote", "modify", "--local", "local", "url", str(tmp_path / "store"))
    return root


def ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


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
