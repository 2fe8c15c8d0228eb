"""Tiny benchmark projects for end-to-end tests of ``crfm-bench run`` (real Ray, MLflow, data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXE = Path(sys.executable).with_name("crfm-bench")

# Minutes, not tens: 6 subjects at 4 mm, 2 short epochs, small patches and windows.
TINY = {
    "synth": {
        "n_subjects": 6,
        "n_val": 1,
        "n_test": 1,
        "spacing_mm": 4.0,
        "contrasts": ["T2w", "PDw"],
    },
    "degrade": {"domains": ["kspace"], "scales": ["2"]},
    "train": {
        "epochs": 2,
        "steps_per_epoch": 4,
        "batch_size": 2,
        "patch_size": 16,
        "val_patches": 2,
        "cpus_per_worker": 1,
    },
    "eval": {"window": 24, "save_predictions": True},
    "models": {
        "edsr": {"options": {"n_blocks": 2, "n_feats": 8}},
        "crfm": {"options": {"n_feats": 8}},
    },
    # no dashboard (about 10 CPU s per run): the tests that need it (the socket check of the
    # full run, tune's state API) turn it on
    "ray": {"num_cpus": 2, "dashboard": False},
}


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.fixture
def project(tmp_path):
    """A working directory with a tiny params.yaml; returns a function running crfm-bench in it."""

    def write(extra: dict | None = None) -> Path:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_update(TINY, extra or {})))
        return tmp_path

    write()

    def run(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(EXE), *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout, **kw
        )

    run.dir = tmp_path
    run.write = write
    return run


@pytest.fixture
def mlflow_runs():
    """Function listing the MLflow runs of a project directory (optionally of one model)."""
    return _mlflow_runs


def _mlflow_runs(path: Path, model: str | None = None) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{path / 'mlflow.db'}")
    runs = []
    for exp in client.search_experiments():
        runs += client.search_runs([exp.experiment_id])
    if model is not None:
        runs = [r for r in runs if r.data.tags.get("crfm.model") == model]
    return runs


# --- The engine's parts without Ray (test_core, test_progress) ------------------------------


def make_case(rng, subject: str, split: str, shape=(16, 16, 16)):
    """A tiny aligned case: a bright cube in noise, LR = HR[::2], reference = 1 - HR."""
    import numpy as np

    from crfm_bench.engine.data import Case

    hr = (0.1 * rng.random(shape)).astype(np.float32)
    hr[3:-3, 3:-3, 3:-3] += 0.8
    lr = hr[::2, ::2, ::2].copy()
    ref = (1.0 - hr).astype(np.float32)
    return Case(subject, split, lr, hr, ref, 1.0, np.eye(4), np.diag([2.0, 2, 2, 1]), "", "")


@pytest.fixture
def params(tmp_path):
    """Params of a tiny training: 3 epochs of 2 steps, 8^3 patches, tiny edsr and crfm."""
    from crfm_bench.config import load_params

    return load_params(
        None,
        [
            f"paths.runs_dir={tmp_path / 'runs'}",
            "train.epochs=3",
            "train.steps_per_epoch=2",
            "train.batch_size=2",
            "train.patch_size=8",
            "train.val_patches=2",
            "train.cpus_per_worker=1",
            "models.edsr.options={n_blocks: 1, n_feats: 4}",
            "models.crfm.options={n_feats: 4}",
        ],
    )


@pytest.fixture
def cases(rng):
    """(train cases, val cases) for the loop."""
    return [make_case(rng, f"s{i}", "train") for i in range(2)], [make_case(rng, "v0", "val")]


@pytest.fixture
def loop_config():
    """Function building the loop's config dict (edsr unless ``model=`` is given)."""

    def build(params, cases, **kw):
        return {"params": params.model_dump(mode="json"), "model": "edsr", "cases": cases, **kw}

    return build
