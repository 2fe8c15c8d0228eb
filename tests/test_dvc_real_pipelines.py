"""The real-dataset DVC pipeline (pipelines/real: one dvc.yaml, a preset per kind) end to end.

Each test builds a tiny tree with the dataset's REAL file names (small volumes holding a
Gaussian blob placed in world coordinates, on correct affines), copies the repository's
dvc.yaml files, presets, ``.dvc`` config and sources into a temporary git repository,
chooses the kind's preset as documented (``presets/<kind>.yaml`` copied to
``pipelines/real/params.yaml``), points ``ingest.raw_dir`` at the tree, shrinks the training
settings, and runs ``dvc repro pipelines/real/dvc.yaml`` (every stage, report included) from
the repository root. It then checks the outputs (HR manifest, LR folder, per-model metrics,
leaderboard, report; all in ``pipelines/real/<kind>/``) and that a second repro does
nothing. Only sizes are overridden: kind, target, contrasts, degradation and task are the
shipped presets (except where a test changes one on purpose).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from dvc_support import ROOT, deep_update, make_project, ran, sh

SIGMA = 6.0  # mm, blob width: smooth enough that x2 k-space truncation keeps almost all of it

# Tiny training and evaluation: CPU seconds, modest threads.
TINY = {
    "train": {
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "patch_size": 16,
        "val_patches": 2,
        "cpus_per_worker": 1,
    },
    "eval": {"window": 24},
    "models": {"edsr": {"options": {"n_blocks": 2, "n_feats": 8}}},
    "ray": {"num_cpus": 2, "dashboard": False},
}


# ----------------------------------------------------------------------------- helpers


def grid_affine(shape, spacing, centre, deg_z: float = 0.0) -> np.ndarray:
    """Voxel-to-world affine (RAS, mm) whose grid centre sits at ``centre``, turned about z."""
    z = np.deg2rad(deg_z)
    rot = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = np.asarray(centre, float) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


def write_blob(path: Path, shape, affine, centre, amp: float) -> None:
    """A NIfTI whose content is a function of world position: background + Gaussian blob."""
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    d2 = ((world - np.asarray(centre)) ** 2).sum(1)
    data = 5.0 + amp * np.exp(-d2 / (2 * SIGMA**2))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.reshape(shape).astype(np.float32), affine), str(path))


def world_centroid(path: Path) -> np.ndarray:
    img = nib.load(str(path))
    w = np.asarray(img.dataobj, dtype=np.float64)
    w = np.clip(w - 5.0, 0, None)  # the blob above the background
    idx = np.indices(w.shape).reshape(3, -1)
    c = (idx * w.reshape(-1)).sum(1) / w.sum()
    return img.affine[:3, :3] @ c + img.affine[:3, 3]


def centre_of(i: int) -> np.ndarray:
    return np.array([-4.0 + 1.5 * i, 3.0 - i, 0.8 * i - 2.0])


REAL = ROOT / "pipelines" / "real"
KINDS = ("ixi", "brats", "bids")
DVC_YAML = "pipelines/real/dvc.yaml"


def make_repo(tmp_path: Path, kind: str, raw: Path, extra: dict) -> Path:
    """A git + DVC project holding the repository's pipelines and sources, with the kind's
    preset chosen as the README says; returns its root."""
    root = make_project(tmp_path / "repo", tmp_path / "store", pipelines=True)
    real = root / "pipelines" / "real"
    (real / "params.yaml").write_text((real / "presets" / f"{kind}.yaml").read_text())
    set_params(root, deep_update(TINY, {"ingest": {"raw_dir": str(raw)}, **extra}))
    return root


def set_params(root: Path, extra: dict) -> dict:
    path = root / "pipelines" / "real" / "params.yaml"
    params = deep_update(yaml.safe_load(path.read_text()), extra)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def shipped(kind: str) -> dict:
    return yaml.safe_load((REAL / "presets" / f"{kind}.yaml").read_text())


def test_one_pipeline_whose_presets_are_valid_and_keep_their_outputs_apart():
    from crfm_bench.config import load_params

    # the shipped choice is the IXI preset, so that the pipeline parses on a fresh clone
    assert (REAL / "params.yaml").read_text() == (REAL / "presets" / "ixi.yaml").read_text()
    assert sorted(p.stem for p in (REAL / "presets").glob("*.yaml")) == sorted(KINDS)
    keys = None
    for kind in KINDS:
        params = load_params(REAL / "presets" / f"{kind}.yaml")
        assert params.ingest.kind == kind
        assert {str(params.paths.data_dir), str(params.paths.runs_dir)} == {
            f"{kind}/data",
            f"{kind}/runs",
        }
        assert str(params.paths.reports_dir) == f"{kind}/reports"
        tree = shipped(kind)
        flat = {(k, sub) for k, v in tree.items() for sub in (v if isinstance(v, dict) else [""])}
        assert keys is None or flat == keys, kind  # the presets differ in values, not keys
        keys = flat
    # the copies this pipeline replaced are gone; the train stages hash the run key's code set
    assert not any((ROOT / "pipelines" / kind / "dvc.yaml").exists() for kind in KINDS)
    stages = yaml.safe_load((REAL / "dvc.yaml").read_text())["stages"]
    root_stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["code"]["cmd"].split()[:2] == root_stages["code"]["cmd"].split()[:2]
    assert [d for d in stages["train"]["do"]["deps"] if "code_version" in d] == [
        "${paths.runs_dir}/code_version.txt"
    ]
    assert stages["train"]["do"]["params"] == root_stages["train"]["do"]["params"]


def check_run_outputs(pipe: Path, models: list[str]) -> pd.DataFrame:
    """Per-model metrics and the leaderboard agree and are finite; returns the leaderboard."""
    board = pd.read_csv(pipe / "reports" / "leaderboard.csv")
    assert sorted(board["model"]) == sorted(models)
    for model in models:
        metrics = json.loads((pipe / "runs" / "models" / model / "metrics.json").read_text())
        assert metrics["model"] == model
        assert math.isfinite(metrics["test_psnr_mean"]) and 0 < metrics["test_ssim_mean"] <= 1
        row = board.set_index("model").loc[model]
        assert row["psnr"] == pytest.approx(metrics["test_psnr_mean"])
    summary = json.loads((pipe / "reports" / "metrics.json").read_text())
    assert set(summary) == set(models)
    html = (pipe / "reports" / "index.html").read_text()
    assert all(model in html for model in models)
    assert (pipe / "reports" / "significance.csv").is_file()
    return board


# ------------------------------------------------------------------------------ IXI

IXI_T2_SHAPE, IXI_T2_SPACING = (24, 24, 20), (2.0, 2.0, 2.4)
IXI_T1_SHAPE, IXI_T1_SPACING = (22, 26, 18), (2.4, 2.0, 2.8)
IXI_IDS = [
    "IXI002-Guys-0828",
    "IXI012-HH-1211",
    "IXI013-HH-1212",
    "IXI016-Guys-0697",
    "IXI017-Guys-0698",
    "IXI019-Guys-0702",
]
IXI_NO_PD = "IXI020-Guys-0700"  # real IXI has subjects lacking a contrast


@pytest.fixture
def ixi_tree(tmp_path) -> Path:
    """IXI as its tarballs extract: IXI-T1/, IXI-T2/, IXI-PD/, IXI-MRA/; T1 on its own grid."""
    root = tmp_path / "raw" / "IXI"
    t2_aff = grid_affine(IXI_T2_SHAPE, IXI_T2_SPACING, (1.0, -2.0, 3.0))
    t1_aff = grid_affine(IXI_T1_SHAPE, IXI_T1_SPACING, (2.0, -1.0, 2.0), deg_z=8.0)
    for i, sid in enumerate([*IXI_IDS, IXI_NO_PD]):
        c = centre_of(i)
        write_blob(root / "IXI-T2" / f"{sid}-T2.nii.gz", IXI_T2_SHAPE, t2_aff, c, 100.0)
        write_blob(root / "IXI-T1" / f"{sid}-T1.nii.gz", IXI_T1_SHAPE, t1_aff, c, 60.0)
        if sid != IXI_NO_PD:
            write_blob(root / "IXI-PD" / f"{sid}-PD.nii.gz", IXI_T2_SHAPE, t2_aff, c, 80.0)
    write_blob(root / "IXI-MRA" / f"{IXI_IDS[0]}-MRA.nii.gz", (8, 8, 8), np.eye(4), (4, 4, 4), 1)
    return root


@pytest.mark.slow
def test_ixi_pipeline_repro_noop_and_raw_dir_dependency(tmp_path, ixi_tree):
    repo = make_repo(tmp_path, "ixi", ixi_tree, {"benchmark": {"models": ["tricubic"]}})
    pipe = repo / "pipelines" / "real" / "ixi"
    defaults = shipped("ixi")
    assert defaults["ingest"]["kind"] == "ixi" and defaults["task"]["reference"] == "PDw"
    scale = defaults["task"]["scale"]

    first = sh(repo, "dvc", "repro", DVC_YAML)
    assert ran(first.stdout) == {
        "ingest",
        f"degrade@kspace-{scale}",
        "code",
        "train@tricubic",
        "leaderboard",
        "report",
    }
    assert "Skipped 1: IXI020-Guys-0700 lacks PDw" in first.stdout

    hr = pd.read_csv(pipe / "data" / "hr" / "manifest.csv")
    assert sorted(hr["subject"].unique()) == IXI_IDS
    assert set(hr["contrast"]) == {"T2w", "PDw"}  # the shipped contrasts: no T1, no MRA
    assert (hr["shape"] == "24,24,20").all() and not hr["resampled"].any()
    assert hr.drop_duplicates("subject")["split"].value_counts().to_dict() == {
        "train": 4,
        "val": 1,
        "test": 1,
    }
    assert all(Path(p).is_relative_to(ixi_tree) for p in hr["origin"])

    lr_dir = pipe / "data" / "lr" / f"kspace-{scale}"
    lr = pd.read_csv(lr_dir / "manifest.csv")
    assert len(lr) == 2 * len(IXI_IDS)  # every contrast degraded
    lr_img = nib.load(str(lr_dir / f"{IXI_IDS[0]}_T2w.nii.gz"))
    assert lr_img.shape == (12, 12, 20)  # in-plane x2: slices untouched
    np.testing.assert_allclose(lr_img.header.get_zooms(), (4.0, 4.0, 2.4), atol=1e-5)

    board = check_run_outputs(pipe, ["tricubic"])
    # a 6 mm blob sampled at 4 mm in-plane is nearly band-limited: interpolation recovers it
    assert board["psnr"].iloc[0] > 30

    lock = yaml.safe_load((pipe.parent / "dvc.lock").read_text())
    assert str(ixi_tree) in {d["path"] for d in lock["stages"]["ingest"]["deps"]}

    assert ran(sh(repo, "dvc", "repro", DVC_YAML).stdout) == set()

    # the raw folder is a dependency: a changed file makes ingest stale
    write_blob(
        ixi_tree / "IXI-T2" / f"{IXI_IDS[1]}-T2.nii.gz",
        IXI_T2_SHAPE,
        grid_affine(IXI_T2_SHAPE, IXI_T2_SPACING, (1.0, -2.0, 3.0)),
        centre_of(9),
        100.0,
    )
    status = sh(repo, "dvc", "status", f"{DVC_YAML}:ingest").stdout
    assert "changed deps" in status and str(ixi_tree) in status

    # adding T1 (another grid) re-ingests; T1 lands on the T2 grid at the same world place
    set_params(repo, {"ingest": {"contrasts": ["T2w", "PDw", "T1w"]}})
    assert ran(sh(repo, "dvc", "repro", f"{DVC_YAML}:ingest").stdout) == {"ingest"}
    hr = pd.read_csv(pipe / "data" / "hr" / "manifest.csv")
    t1 = hr[hr["contrast"] == "T1w"]
    assert len(t1) == len(IXI_IDS) and t1["resampled"].all() and (t1["shape"] == "24,24,20").all()
    sid = IXI_IDS[2]
    np.testing.assert_allclose(
        world_centroid(pipe / "data" / "hr" / f"{sid}_T1w.nii.gz"),
        world_centroid(pipe / "data" / "hr" / f"{sid}_T2w.nii.gz"),
        atol=1.0,  # mm: well under a voxel
    )


# ---------------------------------------------------------------------------- BraTS

BRATS_SHAPE = (24, 24, 19)  # odd slice count, as BraTS' 155
BRATS_2020 = [f"BraTS20_Training_{n:03d}" for n in (1, 2, 3, 4, 5)]
BRATS_2023 = ["BraTS-GLI-00002-000", "BraTS-GLI-00002-001"]  # one patient, two time points


@pytest.fixture
def brats_tree(tmp_path) -> Path:
    """BraTS 2020 folders (t1, t1ce, t2, flair, seg) plus BraTS 2023 names, all on one grid."""
    root = tmp_path / "raw" / "MICCAI_BraTS2020_TrainingData"
    aff = grid_affine(BRATS_SHAPE, (2.0, 2.0, 2.0), (0.0, -10.0, 5.0))
    codes = {"T1w": ("t1", "t1n"), "T1ce": ("t1ce", "t1c"), "T2w": ("t2", "t2w")}
    codes["FLAIR"] = ("flair", "t2f")
    amps = {"T1w": 50.0, "T1ce": 70.0, "T2w": 100.0, "FLAIR": 80.0}
    for i, sid in enumerate([*BRATS_2020, *BRATS_2023]):
        new = sid.startswith("BraTS-")
        for contrast, (old_code, new_code) in codes.items():
            name = f"{sid}-{new_code}" if new else f"{sid}_{old_code}"
            write_blob(
                root / sid / f"{name}.nii.gz", BRATS_SHAPE, aff, centre_of(i), amps[contrast]
            )
        seg = f"{sid}-seg" if new else f"{sid}_seg"
        write_blob(root / sid / f"{seg}.nii.gz", BRATS_SHAPE, aff, centre_of(i), 1.0)
    (root / "name_mapping.csv").write_text("BraTS_2020_subject_ID\nBraTS20_Training_001\n")
    return root


@pytest.mark.slow
def test_brats_pipeline_trains_edsr_and_ranks_it_with_tricubic(tmp_path, brats_tree):
    models = ["tricubic", "edsr"]
    repo = make_repo(tmp_path, "brats", brats_tree, {"benchmark": {"models": models}})
    pipe = repo / "pipelines" / "real" / "brats"
    defaults = shipped("brats")
    assert defaults["task"]["target"] == "T2w" and defaults["task"]["reference"] == "T1w"
    scale = defaults["task"]["scale"]

    first = sh(repo, "dvc", "repro", DVC_YAML)
    stages = {
        "ingest",
        f"degrade@kspace-{scale}",
        "code",
        "train@tricubic",
        "train@edsr",
        "leaderboard",
        "report",
    }
    assert ran(first.stdout) == stages

    hr = pd.read_csv(pipe / "data" / "hr" / "manifest.csv")
    assert sorted(hr["subject"].unique()) == sorted([*BRATS_2020, *BRATS_2023])
    assert set(hr["contrast"]) == {"T2w", "T1w"}  # shipped contrasts; seg never used
    # 19 slices are zero-padded to 20 at the far end (ingest.shape_multiple: 4)
    assert not hr["resampled"].any() and (hr["shape"] == "24,24,20").all()
    # the two time points of one patient share a split
    assert hr[hr["subject"].isin(BRATS_2023)]["split"].nunique() == 1

    lr_img = nib.load(
        str(pipe / "data" / "lr" / f"kspace-{scale}" / "BraTS20_Training_001_T2w.nii.gz")
    )
    assert lr_img.shape == (12, 12, 20)  # the padded slice axis is not degraded

    check_run_outputs(pipe, models)
    history = pd.read_csv(pipe / "runs" / "models" / "edsr" / "history.csv")
    assert len(history) == 1 and history["val_psnr"].notna().all()  # one epoch was trained

    assert ran(sh(repo, "dvc", "repro", DVC_YAML).stdout) == set()


# ----------------------------------------------------------------------------- BIDS

BIDS_T2_SHAPE, BIDS_T1_SHAPE = (24, 24, 20), (20, 22, 18)
BIDS_PLAIN = [f"sub-{n:02d}" for n in range(1, 6)]
BIDS_SESSIONS = ["sub-06_ses-1", "sub-06_ses-2"]


@pytest.fixture
def bids_tree(tmp_path) -> Path:
    """A BIDS dataset: sub-*/anat and sub-06/ses-*/anat, T1w on another grid, derivatives."""
    root = tmp_path / "raw" / "ds000001"
    t2_aff = grid_affine(BIDS_T2_SHAPE, (2.0, 2.0, 2.0), (0.0, 4.0, -3.0))
    t1_aff = grid_affine(BIDS_T1_SHAPE, (2.5, 2.2, 2.4), (1.0, 3.0, -2.0), deg_z=-6.0)
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "tiny", "BIDSVersion": "1.8.0"}')
    anats = [(s, root / s / "anat", s) for s in BIDS_PLAIN]
    anats += [(s, root / "sub-06" / s.split("_")[1] / "anat", s) for s in BIDS_SESSIONS]
    for i, (_, anat, stem) in enumerate(anats):
        write_blob(anat / f"{stem}_T2w.nii.gz", BIDS_T2_SHAPE, t2_aff, centre_of(i), 100.0)
        write_blob(anat / f"{stem}_T1w.nii.gz", BIDS_T1_SHAPE, t1_aff, centre_of(i), 60.0)
        (anat / f"{stem}_T2w.json").write_text('{"EchoTime": 0.1}')
    # a participant with T1w only is skipped; derivatives are never read
    write_blob(root / "sub-07" / "anat" / "sub-07_T1w.nii.gz", BIDS_T1_SHAPE, t1_aff, (0, 0, 0), 60)
    deriv = root / "derivatives" / "prep" / "sub-01" / "anat" / "sub-01_desc-brain_T2w.nii.gz"
    write_blob(deriv, BIDS_T2_SHAPE, t2_aff, (0, 0, 0), 1.0)
    return root


@pytest.mark.slow
def test_bids_pipeline_sessions_resampling_and_missing_raw_dir(tmp_path, bids_tree):
    repo = make_repo(tmp_path, "bids", tmp_path / "no" / "such" / "dir", {})
    pipe = repo / "pipelines" / "real" / "bids"
    # a wrong raw path stops the pipeline at ingest with the path in the message
    bad = sh(repo, "dvc", "repro", DVC_YAML, check=False)
    assert bad.returncode != 0 and str(tmp_path / "no" / "such" / "dir") in bad.stderr + bad.stdout
    assert not (pipe / "runs" / "models").exists()

    set_params(repo, {"ingest": {"raw_dir": str(bids_tree)}})
    set_params(repo, {"benchmark": {"models": ["tricubic"]}})
    scale = shipped("bids")["task"]["scale"]
    first = sh(repo, "dvc", "repro", DVC_YAML)
    # `code` does not depend on the ingest: DVC may have run it, once, before the failed
    # ingest above (the order of independent stages is DVC's)
    assert ran(first.stdout) | (ran(bad.stdout) & {"code"}) == {
        "ingest",
        f"degrade@kspace-{scale}",
        "code",
        "train@tricubic",
        "leaderboard",
        "report",
    }
    assert not ran(first.stdout) & ran(bad.stdout)
    assert "sub-07 lacks T2w" in first.stdout

    hr = pd.read_csv(pipe / "data" / "hr" / "manifest.csv")
    assert sorted(hr["subject"].unique()) == sorted([*BIDS_PLAIN, *BIDS_SESSIONS])
    assert set(hr["contrast"]) == {"T2w", "T1w"}
    assert hr.set_index("contrast")["resampled"].groupby(level=0).all().to_dict() == {
        "T1w": True,
        "T2w": False,
    }
    assert (hr["shape"] == "24,24,20").all()
    assert not hr["origin"].str.contains("derivatives").any()
    assert hr[hr["subject"].isin(BIDS_SESSIONS)]["split"].nunique() == 1  # one person

    lr_img = nib.load(str(pipe / "data" / "lr" / f"kspace-{scale}" / "sub-01_T2w.nii.gz"))
    assert lr_img.shape == (12, 12, 10)  # isotropic x2
    check_run_outputs(pipe, ["tricubic"])

    assert ran(sh(repo, "dvc", "repro", DVC_YAML).stdout) == set()
