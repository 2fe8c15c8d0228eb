"""``crfm-bench ablation`` on real run outputs: ``crfm-bench run --seeds 2`` of crfm and one
ablation (tiny, real Ray Train and MLflow), then the page, its numbers recomputed here from
the per-seed ``per_subject.csv`` files, and the inputs it must refuse (exit 2, one line,
nothing written)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

EXE = Path(sys.executable).with_name("crfm-bench")
ABLATIONS = ("crfm-nograd",)  # one ablation: the page's machinery, at 4 trainings, not 6
TINY = {
    "synth": {
        "n_subjects": 6,
        "n_val": 1,
        "n_test": 2,  # two subjects: the smallest n with an interval
        "spacing_mm": 4.0,
        "contrasts": ["T2w", "PDw"],
    },
    "degrade": {"domains": ["kspace"], "scales": ["2"]},
    "train": {
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "patch_size": 16,
        "val_patches": 2,
        "cpus_per_worker": 1,
    },
    "eval": {"window": 24, "save_predictions": False},
    "models": {m: {"options": {"n_feats": 8}} for m in ("crfm", *ABLATIONS)},
    "ray": {"num_cpus": 2, "dashboard": False},
}


def cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


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


@pytest.mark.slow
def test_ablation_page_from_real_runs(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    models = ",".join(("crfm", *ABLATIONS))
    res = cli(tmp_path, "run", "--models", models, "--seeds", "2", "--no-report", timeout=840)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]

    res = cli(tmp_path, "ablation", "--ablations", ",".join(ABLATIONS), "--seeds", "2")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    reports = tmp_path / "reports"
    doc = json.loads((reports / "ablation.json").read_text())
    assert doc["reference"] == "crfm" and doc["seeds"] == [0, 1] and doc["n_subjects"] == 2
    assert [p["model"] for p in doc["parts"]] == list(ABLATIONS)
    runs = tmp_path / "runs" / "models"
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
    # capacity: every ablation within 3 % of crfm's parameters, shown on the page
    n_crfm = doc["params"]["crfm"]
    assert n_crfm > 0
    for name in ABLATIONS:
        assert abs(doc["params"][name] / n_crfm - 1) < 0.03
    md = (reports / "ablation.md").read_text()
    html = (reports / "ablation.html").read_text()
    assert "Student's t" in md and "subjects are the independent unit" in md
    assert f"{int(n_crfm):,}" in md and f"{int(n_crfm):,}" in html
    assert "reference gradient branch G | crfm-nograd" in md
    assert "<table>" in html and 'src="http' not in html  # one self-contained file

    # refused inputs: one line naming the file or option, exit 2, the page untouched
    before = {p.name: p.read_bytes() for p in reports.iterdir()}
    cases = [
        (("--seeds", "2"), "runs/models/crfm-noref: no finished result"),  # default: all five
        (("--ablations", "crfm-nograd"), "trained with seeds [0, 1], expected [0]"),
        (("--ablations", "crfm-nograd", "--seeds", "2", "-S", "task.scale=1x1x4"), "setting"),
        (("--ablations", "crfm-nograd", "--seeds", "2", "-S", "eval.slice_axis=1"), "contract"),
        (("--ablations", "crfm,crfm-nograd", "--seeds", "2"), "--ablations: crfm is the reference"),
    ]
    missing_seed = (
        ("--ablations", "crfm-nograd", "--seeds", "2"),
        "seed-2/metrics.json: not found",
    )
    for k, (args, message) in enumerate([*cases, missing_seed]):
        if k == len(cases):  # the last case: a seed folder gone
            shutil.move(runs / "crfm-nograd" / "seed-2", tmp_path / "seed-2")
        bad = cli(tmp_path, "ablation", *args)
        assert bad.returncode == 2, (args, bad.stdout[-1000:], bad.stderr[-2000:])
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, bad.stderr)
        assert {p.name: p.read_bytes() for p in reports.iterdir()} == before
