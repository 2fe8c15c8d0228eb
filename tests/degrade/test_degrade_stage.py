"""The degrade stage end to end on a tiny HR manifest written in a fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from degrade_phantoms import ellipsoid

from crfm_bench.config import DegradeConfig, KSpaceConfig, Params, PathsConfig
from crfm_bench.data.manifest import HR_COLUMNS, fmt_tuple, read_manifest, sha256_file
from crfm_bench.data.volume import load_volume, save_volume
from crfm_bench.degrade import build_operator
from crfm_bench.degrade.kspace import foreground_mean
from crfm_bench.degrade.stage import LR_COLUMNS, degrade_dataset, volume_seed
from crfm_bench.errors import InputError, MissingInputError
from crfm_bench.scale import parse_scale

HR_SHAPE = (16, 16, 12)
SUBJECTS = {"sub-000": "train", "sub-001": "val", "sub-002": "test"}
CONTRASTS = ("T1w", "T2w")
HR_AFFINE = np.array(
    [[0.0, -1.2, 0.0, 30.0], [1.1, 0.0, 0.0, -20.0], [0.0, 0.0, 2.0, 5.5], [0, 0, 0, 1]]
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """``<tmp>/data/hr``: 3 subjects x 2 contrasts; sub-000 and sub-001 share identical data."""
    root = tmp_path / "data"
    hr = root / "hr"
    rows = []
    for i, (subject, split) in enumerate(SUBJECTS.items()):
        for j, contrast in enumerate(CONTRASTS):
            data = ellipsoid(HR_SHAPE, value=1.0 + j) + 0.05 * (i if subject == "sub-002" else 0)
            name = f"{subject}_{contrast}.nii.gz"
            save_volume(hr / name, data, HR_AFFINE)
            rows.append(
                {
                    "subject": subject,
                    "contrast": contrast,
                    "path": name,
                    "shape": ",".join(map(str, HR_SHAPE)),
                    "spacing": fmt_tuple(load_volume(hr / name).spacing),
                    "sha256": sha256_file(hr / name),
                    "split": split,
                    "source": "synthetic",
                    "resampled": False,
                    "origin": "test fixture",
                }
            )
    pd.DataFrame(rows, columns=list(HR_COLUMNS)).to_csv(hr / "manifest.csv", index=False)
    return root


def params_for(data_dir: Path, **degrade) -> Params:
    base = {
        "domains": ["kspace", "image"],
        "scales": ["2", "1x1x4"],
        "kspace": KSpaceConfig(snr=30.0, save_zero_filled=True),
    }
    base.update(degrade)
    return Params(paths=PathsConfig(data_dir=data_dir), degrade=DegradeConfig(**base))


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_stage_writes_volumes_and_manifest(data_dir: Path) -> None:
    params = params_for(data_dir)
    outputs = degrade_dataset(params, progress=True)
    names = ["kspace-2", "kspace-1x1x4", "image-2", "image-1x1x4"]
    assert outputs == [data_dir / "lr" / n for n in names]
    assert sorted(p.name for p in (data_dir / "lr").iterdir()) == sorted(names)  # no leftovers
    hr_manifest = read_manifest(data_dir / "hr" / "manifest.csv")
    for out in outputs:
        domain, scale_name = out.name.split("-")
        scale = parse_scale(scale_name)
        op = build_operator(domain, scale, params.degrade)
        df = read_manifest(out / "manifest.csv", required=LR_COLUMNS)
        assert list(df.columns) == list(LR_COLUMNS)
        assert len(df) == len(SUBJECTS) * len(CONTRASTS)
        files = {"manifest.csv"}
        for row in df.itertuples(index=False):
            assert (row.domain, row.scale) == (domain, scale_name)
            assert row.split == SUBJECTS[row.subject]
            hr_row = hr_manifest[
                (hr_manifest.subject == row.subject) & (hr_manifest.contrast == row.contrast)
            ].iloc[0]
            hr_file = (out / row.hr_path).resolve()
            assert hr_file == (data_dir / "hr" / hr_row.path).resolve()
            assert sha256_file(hr_file) == row.hr_sha256 == hr_row.sha256
            lr_file = out / row.lr_path
            assert sha256_file(lr_file) == row.sha256
            lr = load_volume(lr_file)
            assert ",".join(map(str, lr.data.shape)) == row.lr_shape
            assert lr.data.shape == op.lr_shape(HR_SHAPE)
            np.testing.assert_allclose(lr.affine, HR_AFFINE @ np.diag([*scale, 1]), atol=1e-5)
            assert row.lr_spacing == fmt_tuple(lr.spacing, digits=6)
            assert json.loads(row.params) == op.describe()
            assert row.seed == volume_seed(0, row.subject, row.contrast, domain, scale)
            files.add(row.lr_path)
            if domain == "kspace":
                zf = load_volume(out / row.zf_path)
                assert zf.data.shape == HR_SHAPE
                np.testing.assert_allclose(zf.affine, HR_AFFINE, atol=1e-5)
                hr = load_volume(hr_file)
                assert row.noise_sigma == pytest.approx(foreground_mean(hr.data) / 30.0)
                files.add(row.zf_path)
            else:
                assert isinstance(row.zf_path, float) and math.isnan(row.zf_path)
                assert math.isnan(row.noise_sigma)
        assert {p.name for p in out.iterdir()} == files
        # Identical HR data, different subjects: different noise (k-space), same LR (image).
        a, b = (load_volume(out / f"{s}_T1w.nii.gz").data for s in ("sub-000", "sub-001"))
        assert np.array_equal(a, b) == (domain == "image")


def test_rerun_is_byte_identical_and_independent_of_order(data_dir: Path) -> None:
    params = params_for(data_dir, domains=["kspace"], scales=["2"])
    (out,) = degrade_dataset(params, progress=False)
    first = snapshot(out)
    assert degrade_dataset(params, progress=False) == [out]
    assert snapshot(out) == first
    with open(out / "sub-001_T1w.nii.gz", "rb") as fh:
        header = fh.read(10)
    assert header[4:8] == b"\0\0\0\0"  # gzip mtime 0: no timestamp in the bytes

    # Reversed manifest rows and one contrast only: the same seeds, the same bytes.
    manifest = data_dir / "hr" / "manifest.csv"
    df = pd.read_csv(manifest, dtype={"subject": str})
    df.iloc[::-1].to_csv(manifest, index=False)
    params = params_for(data_dir, domains=["kspace"], scales=["2"], contrasts=["T2w"])
    degrade_dataset(params, progress=False)
    subset = snapshot(out)
    assert set(subset) == {f"{s}_T2w{zf}.nii.gz" for s in SUBJECTS for zf in ("", "_zf")} | {
        "manifest.csv"
    }
    for name, digest in subset.items():
        if name != "manifest.csv":
            assert first[name] == digest


def test_one_domain_and_scale_for_a_dvc_matrix_stage(data_dir: Path) -> None:
    params = params_for(data_dir)
    assert degrade_dataset(params, domain="image", scale="4", progress=False) == [
        data_dir / "lr" / "image-4"
    ]
    assert [p.name for p in (data_dir / "lr").iterdir()] == ["image-4"]
    with pytest.raises(InputError, match="--domain: 'fourier'"):
        degrade_dataset(params, domain="fourier", progress=False)
    with pytest.raises(InputError, match="--scale"):
        degrade_dataset(params, scale="0", progress=False)
    with pytest.raises(MissingInputError, match="FLAIR"):
        degrade_dataset(params_for(data_dir, contrasts=["FLAIR"]), progress=False)
    with pytest.raises(MissingInputError, match="manifest not found"):
        degrade_dataset(params_for(data_dir.parent / "elsewhere"), progress=False)


def test_unwritable_data_dir_is_an_input_error(data_dir: Path) -> None:
    (data_dir / "lr").write_text("a file where the LR folder should be")
    with pytest.raises(InputError, match=r"LR data directory .*data/lr: cannot create it"):
        degrade_dataset(params_for(data_dir), progress=False)


def corrupt(data_dir: Path, name: str, update_manifest: bool) -> None:
    path = data_dir / "hr" / name
    path.write_bytes(b"\x1f\x8b\x08\x00 this is not a NIfTI file")
    if update_manifest:
        manifest = data_dir / "hr" / "manifest.csv"
        df = pd.read_csv(manifest, dtype={"subject": str})
        df.loc[df.path == name, "sha256"] = sha256_file(path)
        df.to_csv(manifest, index=False)


@pytest.mark.parametrize("update_manifest", [True, False], ids=["unreadable", "sha-mismatch"])
def test_corrupt_hr_file_leaves_earlier_output_intact(data_dir: Path, update_manifest) -> None:
    params = params_for(data_dir, scales=["2"], domains=["kspace"])
    (out,) = degrade_dataset(params, progress=False)
    before = snapshot(out)
    corrupt(data_dir, "sub-001_T2w.nii.gz", update_manifest)
    match = "not a readable NIfTI" if update_manifest else "sha256 differs"
    with pytest.raises(InputError, match=rf"sub-001_T2w\.nii\.gz: {match}") as err:
        degrade_dataset(params, progress=False)
    assert "\n" not in str(err.value)
    assert snapshot(out) == before
    assert [p.name for p in (data_dir / "lr").iterdir()] == ["kspace-2"]  # no staging left


def test_ray_workers_give_the_same_bytes(data_dir: Path, tmp_path: Path) -> None:
    params = params_for(data_dir, scales=["2"], domains=["kspace"])
    (out,) = degrade_dataset(params, progress=False)
    in_process = snapshot(out)
    parallel = params_for(data_dir, scales=["2"], domains=["kspace"], workers=2)
    assert degrade_dataset(parallel, progress=False) == [out]
    assert snapshot(out) == in_process
    corrupt(data_dir, "sub-002_T1w.nii.gz", update_manifest=True)
    with pytest.raises(InputError, match=r"sub-002_T1w\.nii\.gz: not a readable NIfTI"):
        degrade_dataset(parallel, progress=False)
    assert snapshot(out) == in_process
