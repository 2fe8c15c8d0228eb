"""Real-dataset ingest: IXI / BraTS / BIDS layouts, resampling by the affines, splits, determinism.

Every tree is built in a fixture with the datasets' real file names and tiny volumes whose
content is a function of WORLD position (a Gaussian blob at a known point in mm), so a
contrast on another grid carries the same anatomy and the right answer is known.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from crfm_bench.data.ingest import fov_overlap, ingest_dataset, resample_to_grid
from crfm_bench.data.manifest import HR_COLUMNS, read_manifest, sha256_file, split_counts
from crfm_bench.data.sources import scan_source

SIGMA = 3.0  # mm
T2_SHAPE = (16, 16, 12)
T1_SHAPE = (22, 20, 16)


def rotation(deg_z: float, deg_x: float) -> np.ndarray:
    z, x = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def grid_affine(shape, spacing, centre, rot=np.eye(3)) -> np.ndarray:
    """Voxel-to-world affine whose grid centre sits at ``centre`` (mm)."""
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = np.asarray(centre) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


T2_AFFINE = grid_affine(T2_SHAPE, (1.5, 1.5, 2.0), (5.0, -3.0, 2.0))
# T1: another shape, spacing, origin and orientation (12 deg about z, 8 deg about x)
T1_AFFINE = grid_affine(T1_SHAPE, (1.2, 1.25, 1.6), (7.0, -2.0, 1.0), rotation(12, 8))


def world_coords(shape, affine) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


def blob(shape, affine, centre, amp=100.0) -> np.ndarray:
    d2 = ((world_coords(shape, affine) - np.asarray(centre)) ** 2).sum(-1)
    return (amp * np.exp(-d2 / (2 * SIGMA**2))).astype(np.float32)


def world_centroid(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    w = data.astype(np.float64)
    idx = np.indices(data.shape).reshape(3, -1).astype(np.float64)
    c = (idx * w.reshape(-1)).sum(1) / w.sum()
    return affine[:3, :3] @ c + affine[:3, 3]


def write_nii(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def blob_centre(i: int) -> np.ndarray:
    return np.array([4.0 + i, -2.5 + 0.5 * i, 2.5 - 0.3 * i])


# ----------------------------------------------------------------------------------------- IXI

IXI_IDS = ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212", "IXI016-Guys-0697"]
IXI_NO_PD = "IXI017-IOP-0745"


@pytest.fixture(scope="module")
def ixi_tree(tmp_path_factory) -> Path:
    """IXI as its tarballs extract (one folder per contrast); T1 on its own rotated grid."""
    root = tmp_path_factory.mktemp("ixi") / "IXI"
    for i, sid in enumerate([*IXI_IDS, IXI_NO_PD]):
        c = blob_centre(i)
        write_nii(root / "IXI-T2" / f"{sid}-T2.nii.gz", blob(T2_SHAPE, T2_AFFINE, c), T2_AFFINE)
        write_nii(root / "IXI-T1" / f"{sid}-T1.nii.gz", blob(T1_SHAPE, T1_AFFINE, c, 80), T1_AFFINE)
        if sid != IXI_NO_PD:
            pd_img = blob(T2_SHAPE, T2_AFFINE, c, 60) + 5.0
            write_nii(root / "IXI-PD" / f"{sid}-PD.nii.gz", pd_img, T2_AFFINE)
    write_nii(root / "IXI-MRA" / f"{IXI_IDS[0]}-MRA.nii.gz", np.ones((4, 4, 4)), np.eye(4))
    (root / "IXI-T2" / f"{IXI_IDS[0]}-T2_copy.nii.gz").write_bytes(b"not used")
    return root


@pytest.fixture(scope="module")
def ixi_out(ixi_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("ixi_out") / "hr"
    report = ingest_dataset("ixi", ixi_tree, out, seed=0)
    return out, report, read_manifest(out / "manifest.csv")


def test_ixi_manifest_rows_and_columns(ixi_out, ixi_tree):
    out, _, df = ixi_out
    assert tuple(df.columns) == HR_COLUMNS
    assert sorted(df["subject"].unique()) == IXI_IDS
    assert set(df["contrast"]) == {"T1w", "T2w", "PDw"}
    assert len(df) == 3 * len(IXI_IDS)
    assert (df["source"] == "ixi").all()
    for row in df.itertuples():
        assert row.path == f"{row.subject}_{row.contrast}.nii.gz"
        assert sha256_file(out / row.path) == row.sha256
        code = {"T1w": "T1", "T2w": "T2", "PDw": "PD"}[row.contrast]
        assert Path(row.origin) == (ixi_tree / f"IXI-{code}" / f"{row.subject}-{code}.nii.gz")
        # every contrast of a subject is written on the target (T2) grid
        assert row.shape == "16,16,12" and row.spacing == "1.5,1.5,2"
        img = nib.load(out / row.path)
        assert img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, T2_AFFINE, atol=1e-5)
    assert (out / "fingerprint.json").is_file()


def test_ixi_t1_resampled_onto_t2_grid_by_affines(ixi_out):
    out, report, df = ixi_out
    flags = {(r.subject, r.contrast): bool(r.resampled) for r in df.itertuples()}
    assert {k for k, v in flags.items() if v} == {(s, "T1w") for s in IXI_IDS}
    assert sorted(report.resampled) == [(s, "T1w") for s in IXI_IDS]
    for i, sid in enumerate(IXI_IDS):
        c = blob_centre(i)
        t1 = nib.load(out / f"{sid}_T1w.nii.gz").get_fdata()
        # the blob lands where it is in world space (grid spacing 1.5-2 mm; measured error ~0.01 mm)
        assert np.linalg.norm(world_centroid(t1, T2_AFFINE) - c) < 0.1
        # and the whole image matches the anatomy on the T2 grid (cubic: ~0.8%; linear would be ~6%)
        assert np.abs(t1 - blob(T2_SHAPE, T2_AFFINE, c, 80)).max() < 0.03 * 80
        # pairing by voxel index instead would misplace it by millimetres
        raw_t1 = blob(T1_SHAPE, T1_AFFINE, c, 80)
        assert np.linalg.norm(world_centroid(raw_t1, T2_AFFINE) - c) > 3.0


def test_ixi_same_grid_contrasts_copied_unchanged(ixi_out, ixi_tree):
    out, _, _ = ixi_out
    sid = IXI_IDS[1]
    for code, contrast in [("T2", "T2w"), ("PD", "PDw")]:
        src = nib.load(ixi_tree / f"IXI-{code}" / f"{sid}-{code}.nii.gz").get_fdata()
        np.testing.assert_array_equal(nib.load(out / f"{sid}_{contrast}.nii.gz").get_fdata(), src)


def test_ixi_subject_lacking_pd_is_skipped_and_reported(ixi_out):
    _, report, df = ixi_out
    assert IXI_NO_PD not in set(df["subject"])
    assert report.skipped == {IXI_NO_PD: "lacks PDw"}
    summary = report.summary()
    assert IXI_NO_PD in summary and "lacks PDw" in summary
    assert "Ingested 4 ixi subjects" in summary and "Resampled 4 volumes" in summary
    assert len(report.ignored) == 1 and report.ignored[0].name.endswith("T2_copy.nii.gz")
    assert "\n" not in summary


def test_ixi_splits_by_subject_and_counts(ixi_out):
    _, report, df = ixi_out
    per_subject = df.groupby("subject")["split"].nunique()
    assert (per_subject == 1).all()  # all contrasts of a subject in one split
    n_val, n_test = split_counts(len(IXI_IDS))
    counts = df.drop_duplicates("subject")["split"].value_counts().to_dict()
    assert counts == {"train": len(IXI_IDS) - n_val - n_test, "val": n_val, "test": n_test}
    assert report.splits == {"train": 2, "val": 1, "test": 1}
    assert "train 2, val 1, test 1" in report.summary()


def test_same_input_same_manifest_bytes_and_seeded_splits(ixi_tree, ixi_out, tmp_path):
    out, _, _ = ixi_out
    again = tmp_path / "again"
    ingest_dataset("ixi", ixi_tree, again, seed=0)
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    # the seed drives the split: over a few seeds, more than one assignment appears
    assignments = set()
    for seed in range(1, 5):
        ingest_dataset("ixi", ixi_tree, tmp_path / f"s{seed}", seed=seed)
        d = read_manifest(tmp_path / f"s{seed}" / "manifest.csv").drop_duplicates("subject")
        assignments.add(tuple(d.sort_values("subject")["split"]))
    assert len(assignments) > 1


def test_ixi_target_t1_and_contrasts_option(ixi_tree, tmp_path):
    report = ingest_dataset("ixi", ixi_tree, tmp_path / "t1", target="T1w", contrasts=["T2w"])
    df = read_manifest(tmp_path / "t1" / "manifest.csv")
    # PD not needed: the subject without PD is kept; T1w (the target) is added to the contrasts
    assert set(df["contrast"]) == {"T1w", "T2w"} and report.skipped == {}
    assert sorted(df["subject"].unique()) == sorted([*IXI_IDS, IXI_NO_PD])
    assert set(df["shape"]) == {"22,20,16"}
    assert df.loc[df["contrast"] == "T2w", "resampled"].all()
    assert not df.loc[df["contrast"] == "T1w", "resampled"].any()
    # T2 brought into T1 space: the blob sits at the same world point
    i = IXI_IDS.index("IXI013-HH-1212")
    t2 = nib.load(tmp_path / "t1" / "IXI013-HH-1212_T2w.nii.gz")
    np.testing.assert_allclose(t2.affine, T1_AFFINE, atol=1e-5)
    t2_data = t2.get_fdata()
    assert np.linalg.norm(world_centroid(t2_data, T1_AFFINE) - blob_centre(i)) < 0.4


# ---------------------------------------------------------------------- resampling primitives


def test_resample_identity_and_pure_shift():
    rng = np.random.default_rng(0)
    data = rng.random((8, 9, 7)).astype(np.float32) + 0.1
    aff = grid_affine(data.shape, (1.0, 2.0, 1.5), (0, 0, 0))
    same = resample_to_grid(data, aff, data.shape, aff, order=3)
    np.testing.assert_allclose(same, data, atol=1e-5)
    # target grid shifted by exactly one source voxel along x: voxel i reads source i + 1
    shifted = aff.copy()
    shifted[:3, 3] += aff[:3, 0]
    out = resample_to_grid(data, aff, data.shape, shifted, order=1)
    np.testing.assert_allclose(out[:-1], data[1:], atol=1e-6)
    assert np.all(out[-1] == 0)  # outside the source's field of view


def test_fov_overlap_fractions():
    aff = grid_affine((10, 10, 10), (1.0, 1.0, 1.0), (0, 0, 0))
    assert fov_overlap((10, 10, 10), aff, (10, 10, 10), aff) == 1.0
    half = aff.copy()
    half[0, 3] += 5.0  # target grid 5 voxels further along x: half of it is covered
    assert fov_overlap((10, 10, 10), aff, (10, 10, 10), half) == pytest.approx(0.5)
    far = aff.copy()
    far[:3, 3] += 100.0
    assert fov_overlap((10, 10, 10), aff, (10, 10, 10), far) == 0.0


# --------------------------------------------------------------------------------------- BraTS

BRATS_SHAPE = (12, 12, 10)
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def brats_images(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {c: rng.random(BRATS_SHAPE).astype(np.float32) + 0.5 for c in range(5)}


@pytest.mark.parametrize(
    ("year", "ids", "codes", "sep"),
    [
        (
            "2020",
            ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003"],
            ["t1", "t1ce", "t2", "flair", "seg"],
            "_",
        ),
        ("2021", ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003"], None, "_"),
        (
            "2023",
            ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000"],
            ["t1n", "t1c", "t2w", "t2f", "seg"],
            "-",
        ),
    ],
)
def test_brats_naming(tmp_path, year, ids, codes, sep):
    codes = codes or ["t1", "t1ce", "t2", "flair", "seg"]
    contrasts = ["T1w", "T1ce", "T2w", "FLAIR", None]
    root = tmp_path / f"BraTS{year}"
    written = {}
    for i, sid in enumerate(ids):
        for k, (code, img) in enumerate(zip(codes, brats_images(i).values(), strict=True)):
            affine = BRATS_AFFINE.copy()
            affine[0, 3] += 1e-5 * k  # header float noise: still one grid
            write_nii(root / sid / f"{sid}{sep}{code}.nii.gz", img, affine)
            written[(sid, contrasts[k])] = img
    # a case without FLAIR is skipped
    lone = ids[0].replace(ids[0][-3:], "999")
    for code in codes[:3]:
        write_nii(root / lone / f"{lone}{sep}{code}.nii.gz", brats_images(9)[0], BRATS_AFFINE)

    report = ingest_dataset("brats", root, tmp_path / "hr")
    df = read_manifest(tmp_path / "hr" / "manifest.csv")
    assert sorted(df["subject"].unique()) == ids
    assert set(df["contrast"]) == {"T1w", "T1ce", "T2w", "FLAIR"}  # seg not used
    assert not df["resampled"].any() and report.resampled == []
    assert report.skipped == {lone: "lacks FLAIR"}
    for row in df.itertuples():
        data = nib.load(tmp_path / "hr" / row.path).get_fdata()
        np.testing.assert_array_equal(data, written[(row.subject, row.contrast)])


def test_brats_2023_time_points_share_a_split(tmp_path):
    root = tmp_path / "BraTS2023"
    ids = [
        "BraTS-GLI-00000-000",
        "BraTS-GLI-00002-000",
        "BraTS-GLI-00002-001",
        "BraTS-GLI-00003-000",
        "BraTS-GLI-00005-000",
    ]
    for i, sid in enumerate(ids):
        for code, img in zip(["t1n", "t1c", "t2w", "t2f"], brats_images(i).values(), strict=False):
            write_nii(root / sid / f"{sid}-{code}.nii.gz", img, BRATS_AFFINE)
    for seed in range(6):
        report = ingest_dataset("brats", root, tmp_path / "hr", seed=seed)
        df = read_manifest(tmp_path / "hr" / "manifest.csv").set_index(["subject", "contrast"])
        assert df.loc[(ids[1], "T2w"), "split"] == df.loc[(ids[2], "T2w"), "split"]
        assert sum(report.splits.values()) == len(ids)


# ---------------------------------------------------------------------------------------- BIDS


def bids_grid(sub: int) -> tuple[np.ndarray, np.ndarray]:
    return blob(T2_SHAPE, T2_AFFINE, blob_centre(sub)), T2_AFFINE


def test_bids_without_sessions(tmp_path):
    root = tmp_path / "ds"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    for s in range(1, 5):
        sub = f"sub-{s:02d}"
        img, aff = bids_grid(s)
        ext = ".nii" if s == 2 else ".nii.gz"  # uncompressed NIfTI is valid BIDS
        write_nii(root / sub / "anat" / f"{sub}_T1w{ext}", img * 0.8, aff)
        write_nii(root / sub / "anat" / f"{sub}_T2w{ext}", img, aff)
    write_nii(root / "sub-01" / "anat" / "sub-01_run-2_T1w.nii.gz", np.ones(T2_SHAPE), T2_AFFINE)
    write_nii(root / "sub-03" / "anat" / "sub-03_ce-gadolinium_T1w.nii.gz", *bids_grid(3))
    # derivatives are not raw data: a broken file there must not be read
    bad = root / "derivatives" / "fmriprep" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"garbage")

    report = ingest_dataset("bids", root, tmp_path / "hr", contrasts=["T1w", "T2w"])
    df = read_manifest(tmp_path / "hr" / "manifest.csv")
    assert sorted(df["subject"].unique()) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert set(df["contrast"]) == {"T1w", "T2w"} and not df["resampled"].any()
    origins = df.set_index(["subject", "contrast"])["origin"]
    assert Path(origins[("sub-01", "T1w")]).name == "sub-01_T1w.nii.gz"  # run-2 not chosen
    assert Path(origins[("sub-02", "T2w")]).name == "sub-02_T2w.nii"
    assert Path(origins[("sub-03", "T1w")]).name == "sub-03_T1w.nii.gz"
    assert [p.name for p in report.duplicates] == ["sub-01_run-2_T1w.nii.gz"]
    # a T1w with a contrast-agent entity is the post-contrast T1 (T1ce)
    scan = scan_source("bids", root)
    ce = [f for f in scan.files if f.path.name == "sub-03_ce-gadolinium_T1w.nii.gz"]
    assert [(f.subject, f.contrast) for f in ce] == [("sub-03", "T1ce")]


def test_bids_with_sessions(tmp_path):
    root = tmp_path / "ds"
    layout = {"sub-01": ["ses-pre", "ses-post"], "sub-02": ["ses-pre"], "sub-03": ["ses-pre"]}
    layout["sub-04"] = ["ses-pre"]
    for s, (sub, sessions) in enumerate(layout.items()):
        for ses in sessions:
            img, aff = bids_grid(s)
            anat = root / sub / ses / "anat"
            write_nii(anat / f"{sub}_{ses}_acq-fast_T2w.nii.gz", img, aff)
            write_nii(anat / f"{sub}_{ses}_FLAIR.nii.gz", img * 0.5 + 1, aff)
            write_nii(
                anat / f"{sub}_{ses}_T1w.nii.gz",
                blob(T1_SHAPE, T1_AFFINE, blob_centre(s)),
                T1_AFFINE,
            )
    # a file whose name disagrees with its folder is not trusted
    write_nii(root / "sub-02" / "ses-pre" / "anat" / "sub-03_ses-pre_PDw.nii.gz", *bids_grid(2))

    for seed in range(6):
        report = ingest_dataset("bids", root, tmp_path / "hr", seed=seed)
        df = read_manifest(tmp_path / "hr" / "manifest.csv")
        ids = sorted(df["subject"].unique())
        assert ids == [
            "sub-01_ses-post",
            "sub-01_ses-pre",
            "sub-02_ses-pre",
            "sub-03_ses-pre",
            "sub-04_ses-pre",
        ]
        split = df.drop_duplicates("subject").set_index("subject")["split"]
        assert split["sub-01_ses-pre"] == split["sub-01_ses-post"]  # one person, one split
    assert set(df["contrast"]) == {"T1w", "T2w", "FLAIR"}
    assert set(df.loc[df["resampled"], "contrast"]) == {"T1w"}
    assert [p.name for p in report.ignored] == ["sub-03_ses-pre_PDw.nii.gz"]
    t1 = nib.load(tmp_path / "hr" / "sub-03_ses-pre_T1w.nii.gz").get_fdata()
    assert np.linalg.norm(world_centroid(t1, T2_AFFINE) - blob_centre(2)) < 0.3


def test_pad_to_multiple_keeps_voxel_zero_and_the_affine():
    from crfm_bench.data.ingest import pad_to_multiple

    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    out = pad_to_multiple(data, 4)
    assert out.shape == (8, 8, 8)
    np.testing.assert_array_equal(out[:5, :6, :7], data)
    assert not out[5:].any() and not out[:, 6:].any() and not out[:, :, 7:].any()
    assert pad_to_multiple(data, 1) is data
