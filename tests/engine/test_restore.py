"""Outputs restored from an artifact store come back readable: a ``.nii.gz`` that an HTTP
download inflated on the way (MLflow's S3 store marks it ``Content-Encoding: gzip``) is
gzipped again, with the same voxels and affine."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from crfm_bench.engine.run import regzip


def test_an_inflated_nifti_gz_is_gzipped_again_with_the_same_voxels(tmp_path):
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    good = tmp_path / "a" / "s1_sr.nii.gz"
    good.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine), good)
    inflated = tmp_path / "a" / "s2_sr.nii.gz"
    inflated.write_bytes(gzip.decompress(good.read_bytes()))  # what the download delivered
    before_good = good.read_bytes()
    assert regzip(tmp_path) == 1
    assert good.read_bytes() == before_good  # a real gzip is left alone
    assert inflated.read_bytes()[:2] == b"\x1f\x8b"
    img = nib.load(inflated)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_array_equal(img.affine, affine)
    assert not list(tmp_path.rglob("*.tmp"))
