"""Helpers for tests that run this repository's own DVC pipelines in a temporary git + DVC
project (importable from tests: pytest's ``pythonpath`` includes ``tests/``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def stage_env() -> dict[str, str]:
    """The environment DVC stages run in: the venv's tools on PATH, no user tracking server."""
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


ENV = stage_env()


def sh(
    cwd: Path, *cmd: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def ran(out: str) -> set[str]:
    """Stages DVC ran, by name within their dvc.yaml (``synthesize``, ``degrade@kspace-2``...)."""
    names = (line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    return {name.rsplit(":", 1)[-1] for name in names}


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def make_project(
    root: Path, store: Path, params: dict | None = None, pipelines: bool = False
) -> Path:
    """Copy the pipeline files and sources to ``root``, apply ``params`` to the root
    params.yaml, make it a git repository and point the default DVC remote at ``store``."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(
        ROOT / "platform", root / "platform", ignore=shutil.ignore_patterns("__pycache__")
    )
    if pipelines:
        shutil.copytree(
            ROOT / "pipelines",
            root / "pipelines",
            ignore=shutil.ignore_patterns(
                "data", "runs", "reports", "mlflow.db", "mlruns", "dvc.lock", ".gitignore"
            ),
        )
    if params:
        tree = deep_update(yaml.safe_load((root / "params.yaml").read_text()), params)
        (root / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    (root / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "test@example.org")
    sh(root, "git", "config", "user.name", "test")
    sh(root, "dvc", "remote", "modify", "--local", "local", "url", str(store))
    return root


def flat(tree: dict, prefix: str = "") -> dict:
    """A nested params tree as {"a.b.c": value} (empty dicts kept as values)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out
