"""Models that run channels-last (``SRModel.channels_last_dims``): laid out so by
``create_model``, and the same function as the contiguous layout to float tolerance (values
and gradients)."""

from __future__ import annotations

import copy

import pytest
import torch

from crfm_bench.models import create_model, list_models, model_info

SMALL = {
    "rcan": {"n_feats": 8, "n_groups": 1, "n_blocks": 2, "reduction": 4},
    "edsr-fmp": {"n_feats": 8, "n_blocks": 2, "window": 4},
    "crfm": {"n_feats": 8, "n_groups": 2, "window": 4},
}


def conv_weights(model: torch.nn.Module, spatial_dims: int) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim == spatial_dims + 2]


def test_the_declared_models_and_only_they_are_laid_out_channels_last():
    declared = set()  # (name, spatial_dims)
    for name in list_models():
        if not model_info(name).trainable:
            continue
        for nd, fmt in ((2, torch.channels_last), (3, torch.channels_last_3d)):
            model = create_model(name, nd, 2)
            weights = conv_weights(model, nd)
            assert weights, name
            if model.memory_format() != torch.contiguous_format:
                declared.add((name, nd))
                assert model.memory_format() == fmt
                assert all(w.is_contiguous(memory_format=fmt) for w in weights), name
                # (a 1x1 kernel or a single input channel is both layouts at once)
                strict = [w for w in weights if w.shape[1] > 1 and max(w.shape[2:]) > 1]
                assert strict and not any(w.is_contiguous() for w in strict), name
            else:
                assert model.memory_format() == torch.contiguous_format
                assert all(w.is_contiguous() for w in weights), name
    # measured faster so (benchmarks/roofline.py): rcan and edsr-fmp in 2D and 3D, crfm and
    # its ablations in 3D; edsr, minet stay contiguous
    crfm = {n for n in list_models("crfm*") if model_info(n).trainable}
    assert declared == {(n, d) for n in ("rcan", "edsr-fmp") for d in (2, 3)} | {
        (n, 3) for n in crfm
    }


@pytest.mark.parametrize(
    ("name", "spatial_dims"),
    [("rcan", 2), ("rcan", 3), ("edsr-fmp", 2), ("edsr-fmp", 3), ("crfm", 3)],
)
def test_channels_last_computes_the_contiguous_model_to_float_tolerance(name, spatial_dims):
    torch.manual_seed(0)
    fast = create_model(name, spatial_dims, 2, **SMALL[name])
    assert fast.memory_format() != torch.contiguous_format
    plain = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
    assert all(w.is_contiguous() for w in conv_weights(plain, spatial_dims))
    lr_shape = (2, 1, *([8] * spatial_dims))
    lr = torch.rand(lr_shape)
    ref = torch.rand(2, 1, *([16] * spatial_dims))
    hr = torch.rand(2, 1, *([16] * spatial_dims))
    outs = []
    for model in (fast, plain):
        sr = model(lr, ref if model.needs_reference else None)
        model.loss(sr, hr).backward()
        outs.append((sr.detach(), [p.grad for p in model.parameters()]))
    (sr_fast, g_fast), (sr_plain, g_plain) = outs
    torch.testing.assert_close(sr_fast, sr_plain, rtol=1e-5, atol=1e-5)
    assert len(g_fast) == len(g_plain) > 0
    for a, b in zip(g_fast, g_plain, strict=True):
        # gradients are sums over the batch and the grid: compare against their scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-8)
