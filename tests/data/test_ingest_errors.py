"""Real-dataset ingest on bad input: one clear error naming the file, and nothing written."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from crfm_bench.data.ingest import ingest_dataset
from crfm_bench.errors import InputError, MissingInputError

SHAPE = (12, 12, 10)
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])
IDS = ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212"]
VICTIM = IDS[1]


def write_nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """A valid IXI tree (three subjects, T1/T2/PD on one grid) with noisy, incompressible data."""
    root = tmp_path / "IXI"
    rng = np.random.default_rng(0)
    for sid in IDS:
        for code in ("T1", "T2", "PD"):
            write_nii(root / f"{sid}-{code}.nii.gz", rng.random(SHAPE) + 0.1)
    return root


def listing(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt(path: Path) -> None:
    path.write_bytes(os.urandom(2048))


def gzip_of_garbage(path: Path) -> None:
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))


def four_d(path: Path) -> None:
    write_nii(path, np.ones((*SHAPE, 2)))


def nan_voxels(path: Path) -> None:
    data = np.ones(SHAPE)
    data[3, 4, 5] = np.nan
    data[0, 0, 0] = np.inf
    write_nii(path, data)


def zero_size(path: Path) -> None:
    write_nii(path, np.zeros((12, 12, 0)))


def all_zero(path: Path) -> None:
    write_nii(path, np.zeros(SHAPE))


BREAKERS = {
    "truncated gzip": (truncate, "not a readable NIfTI"),
    "random bytes": (corrupt, "not a readable NIfTI"),
    "gzip of non-NIfTI": (gzip_of_garbage, "not a readable NIfTI"),
    "4D": (four_d, "expected a 3D volume"),
    "NaN/Inf": (nan_voxels, "2 voxels are NaN or Inf"),
    "zero-size dimension": (zero_size, "shape"),
    "all zero": (all_zero, "empty"),
}


@pytest.mark.parametrize("name", list(BREAKERS))
def test_bad_file_named_and_nothing_written(tree, tmp_path, name):
    breaker, words = BREAKERS[name]
    out = tmp_path / "data" / "hr"
    ingest_dataset("ixi", tree, out)
    before = listing(out)
    assert "manifest.csv" in before

    victim = tree / f"{VICTIM}-PD.nii.gz"
    breaker(victim)
    with pytest.raises(InputError) as err:
        ingest_dataset("ixi", tree, out)
    message = str(err.value)
    assert str(victim) in message and words in message
    assert "\n" not in message
    # the earlier dataset is untouched and no staging folder is left behind
    assert listing(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["hr"]


def test_bad_file_in_fresh_dir_writes_nothing(tree, tmp_path):
    nan_voxels(tree / f"{VICTIM}-T1.nii.gz")
    out = tmp_path / "fresh" / "hr"
    with pytest.raises(InputError, match="NaN or Inf"):
        ingest_dataset("ixi", tree, out)
    assert not (tmp_path / "fresh").exists()


def test_non_overlapping_contrasts_name_both_files(tree, tmp_path):
    far = AFFINE.copy()
    far[:3, 3] = (500.0, 0.0, 0.0)  # the T1 lies half a metre away from the T2
    t1 = write_nii(tree / f"{VICTIM}-T1.nii.gz", np.ones(SHAPE), far)
    with pytest.raises(InputError) as err:
        ingest_dataset("ixi", tree, tmp_path / "hr")
    message = str(err.value)
    assert str(t1) in message and str(tree / f"{VICTIM}-T2.nii.gz") in message
    assert "do not overlap" in message
    assert not (tmp_path / "hr").exists()


def test_partial_overlap_under_half_is_rejected_over_half_accepted(tree, tmp_path):
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.6 * SHAPE[0] * AFFINE[0, 0]  # 40% of the T2 field of view covered
    write_nii(tree / f"{VICTIM}-T1.nii.gz", np.ones(SHAPE), shifted)
    with pytest.raises(InputError, match="covers 42% of"):
        ingest_dataset("ixi", tree, tmp_path / "hr")
    shifted[0, 3] = 0.3 * SHAPE[0] * AFFINE[0, 0]  # 67% covered: resampled, zero outside
    write_nii(tree / f"{VICTIM}-T1.nii.gz", np.ones(SHAPE), shifted)
    report = ingest_dataset("ixi", tree, tmp_path / "hr")
    assert report.resampled == [(VICTIM, "T1w")]
    t1 = nib.load(tmp_path / "hr" / f"{VICTIM}_T1w.nii.gz").get_fdata()
    assert np.all(t1[:3] == 0) and np.allclose(t1[4:], 1.0, atol=1e-6)


def test_empty_source_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=re.escape(f"{empty}: no ixi images found")):
        ingest_dataset("ixi", empty, tmp_path / "hr")
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no bids images found"):
        ingest_dataset("bids", empty, tmp_path / "hr")
    assert not (tmp_path / "hr").exists()


def test_missing_source_and_source_is_a_file(tmp_path):
    with pytest.raises(MissingInputError, match="nowhere: dataset folder not found"):
        ingest_dataset("brats", tmp_path / "nowhere", tmp_path / "hr")
    f = tmp_path / "file.nii.gz"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        ingest_dataset("brats", f, tmp_path / "hr")


def test_unknown_kind(tree, tmp_path):
    with pytest.raises(InputError) as err:
        ingest_dataset("foo", tree, tmp_path / "hr")
    assert str(err.value) == "dataset kind 'foo': unknown; use ixi, brats or bids"


def test_unknown_contrast_and_target(tree, tmp_path):
    with pytest.raises(InputError, match="target 'T3w': unknown contrast"):
        ingest_dataset("ixi", tree, tmp_path / "hr", target="T3w")
    with pytest.raises(InputError, match="contrast 'DWI': unknown contrast"):
        ingest_dataset("ixi", tree, tmp_path / "hr", contrasts=["T1w", "DWI"])


def test_no_complete_subject(tree, tmp_path):
    with pytest.raises(InputError) as err:
        ingest_dataset("ixi", tree, tmp_path / "hr", contrasts=["FLAIR"])
    message = str(err.value)
    assert "no subject has all of T2w, FLAIR" in message and "T1w in 3" in message


def test_too_few_subjects_to_split(tree, tmp_path):
    for code in ("T1", "T2", "PD"):
        (tree / f"{IDS[0]}-{code}.nii.gz").unlink()
    with pytest.raises(InputError, match="2 subjects cannot give 1 validation and 1 test"):
        ingest_dataset("ixi", tree, tmp_path / "hr")


def test_bad_fractions(tree, tmp_path):
    with pytest.raises(InputError, match=r"val_fraction 0\.6 and test_fraction 0\.5"):
        ingest_dataset("ixi", tree, tmp_path / "hr", val_fraction=0.6, test_fraction=0.5)


def test_output_must_not_replace_the_source(tree):
    before = listing(tree)
    with pytest.raises(InputError, match="would replace the dataset folder"):
        ingest_dataset("ixi", tree, tree)
    with pytest.raises(InputError, match="would replace the dataset folder"):
        ingest_dataset("ixi", tree, tree.parent)
    assert listing(tree) == before
