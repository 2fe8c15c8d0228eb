"""The embedded dataset: recipe, determinism, affines, manifest, fingerprint."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from crfm_bench.config import SynthConfig
from crfm_bench.data import synth
from crfm_bench.data.manifest import HR_COLUMNS, read_manifest, sha256_file


def tiny(**kw) -> SynthConfig:
    base = dict(n_subjects=4, n_val=1, n_test=1, spacing_mm=4.0, contrasts=["T1w", "T2w", "PDw"])
    base.update(kw)
    return SynthConfig(**base)


@pytest.mark.parametrize("field", [1.5, 3.0])
def test_textbook_tissue_order_in_images(field):
    cfg = tiny(
        snr=None,
        bias_strength=0.0,
        deform_mm=0.0,
        param_jitter=0.0,
        field_strength=field,
        contrasts=["T1w", "T2w", "PDw", "FLAIR"],
        spacing_mm=3.0,
    )
    subject = synth.synthesize_subject(cfg, 0)
    f = subject.fractions
    regions = {t: f[t] > 0.9 for t in ("wm", "gm", "csf")}
    for t, r in regions.items():
        assert r.sum() > 20, f"too few pure {t} voxels"
    mean = {
        c: {t: float(img[r].mean()) for t, r in regions.items()}
        for c, img in subject.images.items()
    }
    assert mean["T1w"]["wm"] > mean["T1w"]["gm"] > mean["T1w"]["csf"]
    assert mean["T2w"]["csf"] > mean["T2w"]["gm"] > mean["T2w"]["wm"]
    if field == 1.5:
        assert mean["PDw"]["csf"] > mean["PDw"]["gm"] > mean["PDw"]["wm"]
    else:
        # At 3 T, TR 4000 ms does not let CSF (T1 4160 ms) recover: GM outshines CSF on PDw.
        assert mean["PDw"]["gm"] > mean["PDw"]["wm"]
    # FLAIR: CSF nulled, grey matter brightest
    assert mean["FLAIR"]["gm"] > mean["FLAIR"]["wm"] > 3 * mean["FLAIR"]["csf"]


def test_flair_inversion_time_nulls_csf():
    for field in (1.5, 3.0):
        t1, t2, pd = synth.TISSUES[field]["csf"]
        assert synth.signal("FLAIR", t1, t2, pd, field) == pytest.approx(0.0, abs=1e-9)


def test_subjects_differ_but_share_one_deformation_across_contrasts():
    cfg = tiny(snr=None, bias_strength=0.0, param_jitter=0.0)
    a, b = synth.synthesize_subject(cfg, 0), synth.synthesize_subject(cfg, 1)
    assert not np.allclose(a.images["T2w"], b.images["T2w"])
    # Without noise/bias/jitter, each contrast is a positive mix of the same deformed tissue
    # fractions: the support of every contrast of one subject is the same, another subject's not.
    supports = [img > 0 for img in a.images.values()]
    for m in supports[1:]:
        assert np.array_equal(m, supports[0])
    assert not np.array_equal(supports[0], b.images["T1w"] > 0)


def test_snr_is_what_was_asked():
    cfg = tiny(snr=20.0, bias_strength=0.0, spacing_mm=3.0)
    clean = synth.synthesize_subject(tiny(snr=None, bias_strength=0.0, spacing_mm=3.0), 2)
    noisy = synth.synthesize_subject(cfg, 2)
    inside = clean.mask & (clean.images["PDw"] > 0.3)
    resid = noisy.images["PDw"][inside] - clean.images["PDw"][inside]
    snr = clean.images["PDw"][clean.mask].mean() / resid.std()
    assert 16 < snr < 24


def test_grid_is_ras_multiple_of_four_and_on_the_template(tmp_path):
    cfg = tiny()
    shape, affine = synth.output_grid(cfg)
    assert all(n % 4 == 0 for n in shape)
    assert np.allclose(np.diag(affine)[:3], 4.0)
    # brain centroid in world space agrees with the template's (within one output voxel)
    sub = synth.synthesize_subject(tiny(deform_mm=0.0), 0)
    tpl = synth.load_template()
    c_out = nib.affines.apply_affine(affine, np.argwhere(sub.mask).mean(0))
    c_tpl = nib.affines.apply_affine(tpl.affine, np.argwhere(tpl.mask).mean(0))
    assert np.linalg.norm(c_out - c_tpl) < 4.0


def test_dataset_files_manifest_fingerprint_and_same_bytes(tmp_path):
    cfg = tiny()
    m1 = synth.synthesize_dataset(cfg, tmp_path / "a")
    synth.synthesize_dataset(cfg, tmp_path / "b")
    df = read_manifest(tmp_path / "a" / "manifest.csv")
    assert list(df.columns) == list(HR_COLUMNS)
    assert len(df) == len(m1) == 4 * 3
    assert df.groupby("split")["subject"].nunique().to_dict() == {"train": 2, "val": 1, "test": 1}
    for row in df.itertuples():
        path = tmp_path / "a" / row.path
        img = nib.load(path)
        assert img.get_data_dtype() == np.float32
        assert row.sha256 == sha256_file(path)
        assert sha256_file(path) == sha256_file(tmp_path / "b" / row.path), "same seed, same bytes"
        assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (
        tmp_path / "b" / "manifest.csv"
    ).read_bytes()
    fp = json.loads((tmp_path / "a" / "fingerprint.json").read_text())
    assert set(fp["contrasts"]) == {"T1w", "T2w", "PDw"}
    assert fp["contrasts"]["T2w"]["foreground_intensity"]["p99.5"] > 0
    # another seed gives other data
    synth.synthesize_dataset(tiny(seed=1), tmp_path / "c")
    other = read_manifest(tmp_path / "c" / "manifest.csv")
    assert set(other["sha256"]).isdisjoint(df["sha256"])


def test_smooth_field_is_the_cubic_zoom_of_its_coarse_noise():
    # The field is built axis by axis with 1D interpolation matrices; it must be the cubic
    # spline zoom of the same coarse noise (what ndimage.zoom computes on the whole volume).
    from scipy import ndimage

    from crfm_bench.data.synth import _smooth_field

    shape, cells = (30, 41, 23), 7.0
    field = _smooth_field(np.random.default_rng(5), shape, cells)
    coarse = tuple(max(2, int(np.ceil(n / cells)) + 2) for n in shape)
    noise = np.random.default_rng(5).standard_normal(coarse)
    zoomed = ndimage.zoom(noise, [n / c for n, c in zip(shape, coarse, strict=True)], order=3)
    zoomed = (zoomed - zoomed.mean()) / zoomed.std()
    assert field.shape == shape
    np.testing.assert_allclose(field, zoomed, atol=1e-10)
