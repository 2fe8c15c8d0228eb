"""Cross-dataset evaluation: trained on X, tested on Y, reported as its own setting.

Two tiny synthetic datasets of different seeds play X and "another dataset" Y (different
subjects, noise and bias fields, so different content versions). The fast tests use the
training-free tricubic; tests/test_dvc_generalisation.py trains a tiny EDSR through the
DVC pipeline and checks that the cross-dataset numbers are those of its trained weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from crfm_bench.config import load_params
from crfm_bench.data.manifest import manifest_version, read_manifest
from crfm_bench.errors import CrfmBenchError

TINY = {
    "synth": {
        "n_subjects": 6,
        "n_val": 1,
        "n_test": 2,
        "spacing_mm": 4.0,
        "contrasts": ["T2w", "PDw"],
    },
    "degrade": {"domains": ["kspace"], "scales": ["2"]},
    "eval": {"window": 96},
    "train": {
        "epochs": 1,
        "steps_per_epoch": 3,
        "batch_size": 2,
        "patch_size": 16,
        "val_patches": 2,
        "cpus_per_worker": 1,
    },
    "models": {"edsr": {"options": {"n_blocks": 1, "n_feats": 8}}},
    "ray": {"num_cpus": 2, "dashboard": False},
}


def write_params(root: Path, **extra) -> Path:
    tree = {
        **TINY,
        "paths": {
            "data_dir": str(root / "data"),
            "runs_dir": str(root / "runs"),
            "reports_dir": str(root / "reports"),
        },
        "tracking": {
            "uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_location": (root / "mlruns").as_uri(),
        },
        **extra,
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def make_other_dataset(root: Path, seed: int = 1, contrasts=("T2w", "PDw")) -> Path:
    """ "Another dataset": the embedded recipe with another seed, in its own data folder."""
    from crfm_bench.config import SynthConfig
    from crfm_bench.data.synth import synthesize_dataset

    cfg = SynthConfig(**{**TINY["synth"], "seed": seed, "contrasts": list(contrasts)})
    synthesize_dataset(cfg, root / "hr")
    return root


@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    from rich.console import Console

    from crfm_bench import workflow

    root = tmp_path_factory.mktemp("cross")
    params = load_params(write_params(root))
    other = make_other_dataset(root / "other")
    console = Console(quiet=True)
    workflow.run(params, ["tricubic"], console=console, report=False)
    board = workflow.cross(params, ["tricubic"], other, console=console)
    return {"root": root, "params": params, "other": other, "board": board}


def test_two_datasets_have_two_versions(cross):
    p = cross["params"]
    x = manifest_version(p.paths.data_dir / "hr" / "manifest.csv")
    y = manifest_version(cross["other"] / "hr" / "manifest.csv")
    assert x != y


def test_test_data_degraded_the_same_way(cross):
    p = cross["params"]
    home = read_manifest(p.paths.data_dir / "lr" / "kspace-2" / "manifest.csv", ("params",))
    other = read_manifest(cross["other"] / "lr" / "kspace-2" / "manifest.csv", ("params",))
    assert set(home["params"]) == set(other["params"])
    assert len(other) > 0


def test_cross_numbers_are_the_models_on_the_other_test_split(cross):
    """The cross-dataset per-subject PSNR equals a plain benchmark run on dataset Y."""
    from rich.console import Console

    from crfm_bench.engine.run import run_benchmark

    p = cross["params"]
    root = cross["root"]
    got = pd.read_csv(p.paths.runs_dir / "crossdata" / "tricubic" / "per_subject.csv")
    # dataset Y benchmarked on its own, in a separate project folder
    alone = load_params(write_params(root / "alone"))
    alone = alone.model_copy(
        update={"paths": alone.paths.model_copy(update={"data_dir": cross["other"]})}
    )
    run_benchmark(alone, ["tricubic"], console=Console(quiet=True))
    want = pd.read_csv(alone.paths.runs_dir / "models" / "tricubic" / "per_subject.csv")
    assert list(got["subject"]) == list(want["subject"])
    np.testing.assert_allclose(got["psnr"], want["psnr"], rtol=0, atol=1e-6)
    home = pd.read_csv(p.paths.runs_dir / "models" / "tricubic" / "per_subject.csv")
    assert not np.allclose(home["psnr"].to_numpy(), got["psnr"].to_numpy())


def test_reported_as_its_own_setting(cross):
    from mlflow import MlflowClient

    p = cross["params"]
    x = manifest_version(p.paths.data_dir / "hr" / "manifest.csv")
    y = manifest_version(cross["other"] / "hr" / "manifest.csv")
    client = MlflowClient(p.tracking.uri)
    names = [e.name for e in client.search_experiments()]
    (cross_name,) = [n for n in names if n.endswith(f"tested-on-{y}")]
    assert x in cross_name
    board = cross["board"]
    assert list(board["model"]) == ["tricubic"]
    md = (p.paths.reports_dir / "crossdata" / "leaderboard.md").read_text()
    assert f"trained on {x}, tested on {y}" in md
    m = pd.read_json(p.paths.runs_dir / "crossdata" / "tricubic" / "metrics.json", typ="series")
    assert m["trained_on"] == x and m["tested_on"] == y
    # the in-domain leaderboard is untouched: one tricubic row, of dataset X
    home = pd.read_csv(p.paths.reports_dir / "leaderboard.csv")
    assert list(home["model"]) == ["tricubic"]


def test_leaderboard_from_outputs_and_rerun_reuses(cross):
    from mlflow import MlflowClient

    from crfm_bench.engine.crossdata import evaluate_cross
    from crfm_bench.report.leaderboard import crossdata_from_outputs

    p = cross["params"]
    board = crossdata_from_outputs(p, cross["other"])
    assert board["psnr"].iloc[0] == pytest.approx(cross["board"]["psnr"].iloc[0])
    client = MlflowClient(p.tracking.uri)
    count = lambda: sum(  # noqa: E731
        len(client.search_runs([e.experiment_id], "tags.`crfm.kind` = 'model'"))
        for e in client.search_experiments()
    )
    before = count()
    evaluate_cross(p, ["tricubic"], cross["other"])
    assert count() == before


def test_test_data_without_the_reference_contrast_is_refused(cross, tmp_path):
    from crfm_bench.engine.crossdata import check_test_data

    other = make_other_dataset(tmp_path / "t2only", seed=2, contrasts=("T2w", "T1w"))
    with pytest.raises(CrfmBenchError, match="has no PDw"):
        check_test_data(cross["params"], other)
    with pytest.raises(CrfmBenchError, match="not found"):
        check_test_data(cross["params"], tmp_path / "nothing")


def test_task_test_data_is_not_part_of_the_training_setting(tmp_path):
    a = load_params(None, [])
    b = load_params(None, [f"task.test_data={tmp_path}"])
    assert b.task.test_data == tmp_path
    assert a.task.model_dump(mode="json") == b.task.model_dump(mode="json")
