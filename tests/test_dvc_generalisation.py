"""pipelines/generalisation end to end: train on the embedded dataset, test on an ingested one.

"Another dataset" Y is the embedded recipe with another seed, written as a real BIDS tree
(``sub-XX/anat/sub-XX_{T2w,T1w}.nii.gz`` with its affines) and ingested by the pipeline.
A tiny EDSR is trained on X (Ray Train) and tricubic is run; the pipeline's cross-dataset
numbers must be those of EDSR's checkpoint evaluated on Y's test split, reported as the
setting "trained on X, tested on Y"; a second repro does nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dvc_support import deep_update, make_project, ran, sh

TINY = {
    "synth": {
        "n_subjects": 6,
        "n_val": 1,
        "n_test": 2,
        "spacing_mm": 4.0,
        "contrasts": ["T2w", "T1w"],
    },
    "benchmark": {"models": ["edsr", "tricubic"]},
    "train": {
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "patch_size": 16,
        "val_patches": 2,
        "cpus_per_worker": 1,
    },
    "eval": {"window": 96},
    "models": {"edsr": {"options": {"n_blocks": 1, "n_feats": 8}}},
    "ray": {"num_cpus": 2, "dashboard": False},
}


def bids_from_synthetic(root: Path, seed: int) -> Path:
    """A BIDS tree of embedded-recipe subjects of another seed (Y)."""
    from crfm_bench.config import SynthConfig
    from crfm_bench.data.synth import synthesize_dataset

    cfg = SynthConfig(**{**TINY["synth"], "seed": seed})
    staged = root.parent / "staged"
    manifest = synthesize_dataset(cfg, staged)
    for row in manifest.itertuples():
        sub = "sub-" + row.subject.removeprefix("sub-")
        dest = root / sub / "anat" / f"{sub}_{row.contrast}.nii.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(staged / row.path, dest)
    (root / "dataset_description.json").write_text('{"Name": "Y", "BIDSVersion": "1.8.0"}')
    return root


@pytest.mark.slow
def test_generalisation_pipeline_trains_on_x_tests_on_y(tmp_path):
    import torch

    from crfm_bench.config import load_params
    from crfm_bench.data.manifest import manifest_version
    from crfm_bench.engine.data import load_cases
    from crfm_bench.engine.evaluate import evaluate_cases
    from crfm_bench.models import create_model

    raw = bids_from_synthetic(tmp_path / "raw" / "bids", seed=5)
    root = make_project(tmp_path / "repo", tmp_path / "store", pipelines=True)
    pipe = root / "pipelines" / "generalisation"
    params_file = pipe / "params.yaml"
    tree = deep_update(yaml.safe_load(params_file.read_text()), TINY)
    tree["ingest"]["raw_dir"] = str(raw)
    params_file.write_text(yaml.safe_dump(tree, sort_keys=False))

    res = sh(root, "dvc", "repro", "pipelines/generalisation/dvc.yaml", timeout=1500)
    assert {"train_data", "test_data", "degrade_test", "train@edsr", "leaderboard"} <= ran(
        res.stdout
    )
    x = manifest_version(pipe / "data" / "hr" / "manifest.csv")
    y = manifest_version(pipe / "data_test" / "hr" / "manifest.csv")
    assert x != y
    home = pd.read_csv(pipe / "reports" / "leaderboard.csv")
    cross = pd.read_csv(pipe / "reports" / "crossdata" / "leaderboard.csv")
    assert sorted(home["model"]) == sorted(cross["model"]) == ["edsr", "tricubic"]
    md = (pipe / "reports" / "crossdata" / "leaderboard.md").read_text()
    assert f"trained on {x}, tested on {y}" in md
    m = json.loads((pipe / "runs" / "crossdata" / "edsr" / "metrics.json").read_text())
    assert (m["trained_on"], m["tested_on"]) == (x, y)

    # the cross-dataset numbers are EDSR's trained weights on Y's test split
    p = load_params(params_file, [f"paths.data_dir={pipe / 'data_test'}"])
    state = torch.load(
        pipe / "runs" / "models" / "edsr" / "checkpoint" / "state.pt", weights_only=False
    )
    mcfg = p.model_config_for("edsr")
    model = create_model("edsr", spatial_dims=3, scale=(2, 2, 2), size=mcfg.size, **mcfg.options)
    model.load_state_dict(state["model"])
    want = evaluate_cases(model, "edsr", load_cases(p, ("test",)), p)
    got = pd.read_csv(pipe / "runs" / "crossdata" / "edsr" / "per_subject.csv")
    assert list(got["subject"]) == list(want["subject"])
    np.testing.assert_allclose(got["psnr"], want["psnr"], rtol=0, atol=1e-4)
    # Y's test subjects are not X's test subjects' numbers
    x_edsr = pd.read_csv(pipe / "runs" / "models" / "edsr" / "per_subject.csv")
    assert not np.allclose(np.sort(x_edsr["psnr"]), np.sort(got["psnr"]))

    again = sh(root, "dvc", "repro", "pipelines/generalisation/dvc.yaml")
    assert ran(again.stdout) == set()
