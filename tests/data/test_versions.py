"""Content-addressed dataset versions: what the data is, never where it lies.

A tiny BIDS tree (real layout, real NIfTI with affines) is ingested through its own path
and through a symlink: one version. One changed voxel, one changed split, or another
degradation parameter: another version. LR versions and run keys follow the same rule.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from crfm_bench.config import load_params
from crfm_bench.data.ingest import ingest_dataset
from crfm_bench.data.manifest import (
    HR_COLUMNS,
    content_version,
    fmt_affine,
    manifest_version,
    read_manifest,
    voxel_sha256,
)
from crfm_bench.degrade.stage import degrade_dataset

SHAPE = (12, 12, 8)
N_SUBJECTS = 6


def affine_of(i: int) -> np.ndarray:
    a = np.diag([2.0, 2.0, 3.0, 1.0])
    a[:3, 3] = (-12.0 + i, -11.0, -10.0)
    return a


def write_bids(root: Path) -> Path:
    rng = np.random.default_rng(7)
    for i in range(N_SUBJECTS):
        anat = root / f"sub-{i:02d}" / "anat"
        anat.mkdir(parents=True)
        for contrast in ("T2w", "PDw"):
            data = (rng.random(SHAPE) * 100 + 10).astype(np.float32)
            nib.save(nib.Nifti1Image(data, affine_of(i)), str(anat / f"sub-{i:02d}_{contrast}.nii.gz"))
    return root


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> Path:
    return write_bids(tmp_path_factory.mktemp("raw") / "ds")


def ingest(src: Path, out: Path, seed: int = 0) -> Path:
    ingest_dataset("bids", src, out, seed=seed, val_fraction=0.2, test_fraction=0.2)
    return out / "manifest.csv"


def test_same_tree_through_a_symlink_has_one_version(bids, tmp_path):
    link = tmp_path / "mounted-elsewhere"
    os.symlink(bids, link)
    a = ingest(bids, tmp_path / "a" / "hr")
    b = ingest(link, tmp_path / "b" / "hr")
    ma, mb = read_manifest(a), read_manifest(b)
    assert list(ma.columns) == list(HR_COLUMNS)
    assert (ma["origin"] != mb["origin"]).all()  # provenance differs (and is kept) ...
    assert manifest_version(a) == manifest_version(b)  # ... the version does not
    assert len(manifest_version(a)) == 12
    # the fingerprint records the same version
    fa = (a.parent / "fingerprint.json").read_text()
    assert manifest_version(a) in fa


def test_manifest_content_columns_match_the_files(bids, tmp_path):
    m = ingest(bids, tmp_path / "hr")
    df = read_manifest(m)
    for row in df.itertuples():
        img = nib.load(str(m.parent / row.path))
        assert row.data_sha256 == voxel_sha256(np.asarray(img.dataobj, dtype=np.float32))
        assert row.affine == fmt_affine(img.affine)
        assert str(bids) not in row.recipe and "/" not in row.recipe  # no paths hashed


def test_one_changed_voxel_gives_another_version(bids, tmp_path):
    copy = shutil.copytree(bids, tmp_path / "copy")
    before = manifest_version(ingest(copy, tmp_path / "before" / "hr"))
    f = copy / "sub-03" / "anat" / "sub-03_PDw.nii.gz"
    img = nib.load(str(f))
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[5, 5, 4] += 1.0
    nib.save(nib.Nifti1Image(data, img.affine), str(f))
    after = ingest(copy, tmp_path / "after" / "hr")
    assert manifest_version(after) != before


def test_one_changed_split_gives_another_version(bids, tmp_path):
    a = ingest(bids, tmp_path / "a" / "hr")
    df = pd.read_csv(a, dtype=str, keep_default_na=False)
    # move one test subject to train by hand: only the split column changes
    subject = df.loc[df["split"] == "test", "subject"].iloc[0]
    df.loc[df["subject"] == subject, "split"] = "train"
    b = tmp_path / "b.csv"
    df.to_csv(b, index=False)
    assert manifest_version(b) != manifest_version(a)
    # a reordered manifest (rows shuffled) is the same data
    c = tmp_path / "c.csv"
    pd.read_csv(a, dtype=str, keep_default_na=False).iloc[::-1].to_csv(c, index=False)
    assert content_version(c) == content_version(a)


def test_another_split_seed_gives_another_version(bids, tmp_path):
    versions = {manifest_version(ingest(bids, tmp_path / f"s{s}" / "hr", seed=s)) for s in range(4)}
    splits = {
        tuple(read_manifest(tmp_path / f"s{s}" / "hr" / "manifest.csv")["split"])
        for s in range(4)
    }
    assert len(versions) == len(splits) > 1


def test_legacy_manifest_without_content_columns_gets_the_same_version(bids, tmp_path):
    m = ingest(bids, tmp_path / "hr")
    legacy = pd.read_csv(m, dtype=str, keep_default_na=False)
    legacy = legacy.drop(columns=["data_sha256", "affine"])
    old = m.parent / "legacy.csv"
    legacy.to_csv(old, index=False)
    assert content_version(old) == content_version(m)  # completed from the files


def _params(data_dir: Path, *extra: str):
    return load_params(
        None,
        [
            f"paths.data_dir={data_dir}",
            "degrade.domains=[kspace]",
            "degrade.scales=[2]",
            *extra,
        ],
    )


def test_lr_versions_follow_content_and_settings(bids, tmp_path):
    link = tmp_path / "link"
    os.symlink(bids, link)
    ingest(bids, tmp_path / "a" / "hr")
    ingest(link, tmp_path / "b" / "hr")
    (lr_a,) = degrade_dataset(_params(tmp_path / "a"), progress=False)
    (lr_b,) = degrade_dataset(_params(tmp_path / "b"), progress=False)
    va, vb = manifest_version(lr_a / "manifest.csv"), manifest_version(lr_b / "manifest.csv")
    assert va == vb
    # the whole data folder moved elsewhere: same HR and LR versions
    moved = shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "data")
    assert manifest_version(moved / "lr" / "kspace-2" / "manifest.csv") == va
    assert manifest_version(moved / "hr" / "manifest.csv") == manifest_version(
        tmp_path / "a" / "hr" / "manifest.csv"
    )
    # another operator setting: another LR version
    shutil.copytree(tmp_path / "a" / "hr", tmp_path / "c" / "hr")
    (lr_c,) = degrade_dataset(_params(tmp_path / "c", "degrade.kspace.window=hann"), progress=False)
    assert manifest_version(lr_c / "manifest.csv") != va
    lr_rows = read_manifest(lr_a / "manifest.csv", required=("data_sha256", "hr_data_sha256"))
    hr_rows = read_manifest(tmp_path / "a" / "hr" / "manifest.csv").set_index(
        ["subject", "contrast"]
    )
    for row in lr_rows.itertuples():
        assert row.hr_data_sha256 == hr_rows.loc[(row.subject, row.contrast), "data_sha256"]


def test_run_keys_follow_the_content_versions(bids, tmp_path):
    from crfm_bench.engine.run import Setting, model_payload
    from crfm_bench.tracking import run_key

    link = tmp_path / "link"
    os.symlink(bids, link)
    keys = []
    for name, src in (("a", bids), ("b", link)):
        ingest(src, tmp_path / name / "hr")
        params = _params(tmp_path / name)
        (lr,) = degrade_dataset(params, progress=False)
        setting = Setting(
            client=None,
            experiment_id="0",
            experiment="x",
            dataset_version=manifest_version(tmp_path / name / "hr" / "manifest.csv"),
            lr_version=manifest_version(lr / "manifest.csv"),
            spec_hash="spec",
        )
        keys.append(run_key(model_payload(params, "tricubic", setting)))
    assert keys[0] == keys[1]


def test_data_info_prints_the_content_version(bids, tmp_path, monkeypatch):
    from crfm_cli.main import app
    from typer.testing import CliRunner

    m = ingest(bids, tmp_path / "data" / "hr")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    result = CliRunner().invoke(app, ["data", "info"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert manifest_version(m) in result.output
    assert "content hash" in result.output
