from __future__ import annotations

import pytest
import torch

from crfm_bench.models import create_model
from crfm_bench.models.gradient import gradient_magnitude


@pytest.mark.parametrize(("dims", "scale"), [(2, (2, 2)), (3, (2, 2, 2)), (3, (1, 1, 4))])
def test_crfm_output_depends_on_the_reference(
    dims: int, scale: tuple[int, ...], smooth_volume, decimate
) -> None:
    model = create_model("crfm", spatial_dims=dims, scale=scale).eval()
    hr_size = (16,) * dims
    lr = decimate(smooth_volume((1, 1, *hr_size)), scale)
    with torch.no_grad():
        a = model(lr, smooth_volume((1, 1, *hr_size), seed=1))
        b = model(lr, smooth_volume((1, 1, *hr_size), seed=2))
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize(
    "name", ["crfm-nograd", "crfm-nofmp", "crfm-fmp-xscale", "crfm-fmp-xmod", "edsr-fmp", "minet"]
)
def test_other_reference_models_use_the_reference(name: str) -> None:
    model = create_model(name, spatial_dims=3, scale=2).eval()
    lr = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        a = model(lr, torch.rand(1, 1, 16, 16, 16))
        b = model(lr, torch.rand(1, 1, 16, 16, 16))
    assert (a - b).abs().max() > 1e-5


def test_crfm_noref_does_not_depend_on_the_reference() -> None:
    model = create_model("crfm-noref", spatial_dims=3, scale=2).eval()
    lr = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        a = model(lr, torch.rand(1, 1, 16, 16, 16))
        b = model(lr, torch.rand(1, 1, 16, 16, 16))
        c = model(lr)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_ablations_remove_their_parts() -> None:
    full = create_model("crfm", 3, 2)
    assert full.encoder is not None and full.inject is not None and full.fmp is not None
    assert full.encoder.image_stem is not None and full.encoder.gradient_stem is not None
    assert all(f.cross_scale is not None and f.cross_modality is not None for f in full.fmp)
    assert [f.shift for f in full.fmp] == [False, True]  # shifted windows on alternate FMPs
    assert all(len(f) == 0 for f in full.fill)
    nograd = create_model("crfm-nograd", 3, 2)
    assert nograd.inject is None and nograd.encoder.gradient_stem is None
    assert nograd.encoder.image_stem is not None
    nofmp = create_model("crfm-nofmp", 3, 2)
    assert nofmp.fmp is None and nofmp.encoder.image_stem is None
    assert nofmp.inject is not None
    noref = create_model("crfm-noref", 3, 2)
    assert noref.encoder is None and noref.inject is None
    assert all(f.cross_modality is None and f.cross_scale is not None for f in noref.fmp)
    xscale = create_model("crfm-fmp-xscale", 3, 2)
    assert all(f.cross_modality is None and f.cross_scale is not None for f in xscale.fmp)
    assert xscale.encoder.image_stem is None and xscale.inject is not None
    xmod = create_model("crfm-fmp-xmod", 3, 2)
    assert all(f.cross_modality is not None and f.cross_scale is None for f in xmod.fmp)
    for ablation in (nograd, nofmp, noref, xscale, xmod):  # the removed part is refilled
        assert all(len(f) > 0 for f in ablation.fill)


ABLATIONS = ["crfm-noref", "crfm-nograd", "crfm-nofmp", "crfm-fmp-xscale", "crfm-fmp-xmod"]

# crfm's own size is an anchor other baselines are matched to: keep it within 5 % of these.
CRFM_ANCHORS = {("tiny", 2): 176_620, ("tiny", "1x1x4"): 145_452, ("base", 2): 16_660_000}


def _meta_params(name: str, scale: object, size: str) -> int:
    with torch.device("meta"):  # no memory for the base models
        return create_model(name, 3, scale, size).num_parameters()


@pytest.mark.parametrize("size", ["tiny", "base"])
@pytest.mark.parametrize("scale", [2, "1x1x4"])
def test_ablations_and_edsr_fmp_are_capacity_matched(scale: object, size: str) -> None:
    crfm = _meta_params("crfm", scale, size)
    anchor = CRFM_ANCHORS.get((size, scale))
    if anchor is not None:
        assert abs(crfm / anchor - 1) <= 0.05, (crfm, anchor)
    for name in ABLATIONS:
        params = _meta_params(name, scale, size)
        assert abs(params / crfm - 1) <= 0.03, (name, params, crfm)
    edsr, edsr_fmp = _meta_params("edsr", scale, size), _meta_params("edsr-fmp", scale, size)
    assert abs(edsr_fmp / edsr - 1) <= 0.03, (edsr_fmp, edsr)


def test_capacity_matching_holds_for_2d_and_overrides() -> None:
    crfm = create_model("crfm", 2, 2, n_feats=8).num_parameters()
    for name in ABLATIONS:
        assert abs(create_model(name, 2, 2, n_feats=8).num_parameters() / crfm - 1) <= 0.03


def test_crfm_loss_adds_the_weighted_gradient_term() -> None:
    sr, hr = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8)
    l1 = (sr - hr).abs().mean()
    grad_l1 = (gradient_magnitude(sr) - gradient_magnitude(hr)).abs().mean()
    torch.testing.assert_close(create_model("crfm", 3, 2).loss(sr, hr), l1 + 0.1 * grad_l1)
    torch.testing.assert_close(
        create_model("crfm", 3, 2, lambda_grad=0.5).loss(sr, hr), l1 + 0.5 * grad_l1
    )
    torch.testing.assert_close(create_model("edsr", 3, 2).loss(sr, hr), l1)


def test_untrained_crfm_stays_near_its_interpolation_residual() -> None:
    # The global residual: with the learnt branch silenced the output is the tricubic image.
    model = create_model("crfm", 3, 2).eval()
    torch.nn.init.zeros_(model.tail.weight)
    torch.nn.init.zeros_(model.tail.bias)
    lr, ref = torch.rand(1, 1, 6, 6, 6), torch.rand(1, 1, 12, 12, 12)
    with torch.no_grad():
        sr = model(lr, ref)
    torch.testing.assert_close(sr, create_model("tricubic", 3, 2)(lr))
