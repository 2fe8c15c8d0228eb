"""Every registered model: output shapes, gradient flow, and overfitting one tiny batch."""

from __future__ import annotations

import pytest
import torch

from crfm_bench.models import create_model, list_models, model_info

SCALES = {2: [2, 4, (1, 4)], 3: [2, 4, (1, 1, 4)]}
CASES = [(name, dims, scale) for name in list_models() for dims in (2, 3) for scale in SCALES[dims]]
TRAINABLE = [name for name in list_models() if model_info(name).trainable]


@pytest.mark.parametrize(("name", "dims", "scale"), CASES)
def test_output_shape_is_lr_times_scale(name: str, dims: int, scale: object) -> None:
    model = create_model(name, spatial_dims=dims, scale=scale)
    lr_size = (8, 6) if dims == 2 else (8, 6, 4)
    lr = torch.rand(2, 1, *lr_size)
    hr_size = tuple(n * s for n, s in zip(lr_size, model.scale, strict=True))
    ref = torch.rand(2, 1, *hr_size)
    with torch.no_grad():
        sr = model(lr, ref)
    assert sr.shape == (2, 1, *hr_size)
    assert sr.dtype == torch.float32
    assert torch.isfinite(sr).all()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", TRAINABLE)
def test_gradients_reach_every_parameter(name: str, dims: int) -> None:
    model = create_model(name, spatial_dims=dims, scale=2)
    with torch.no_grad():  # move zero-initialised gates (e.g. MINet's gammas) off zero
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    for offset in (-1.0, 0.0, 1.0):  # vary the input so no ReLU is dead for all of them
        lr = torch.rand(2, 1, *([6] * dims)) + offset
        hr = torch.rand(2, 1, *([12] * dims))
        model.loss(model(lr, torch.rand_like(hr) - offset), hr).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"{name}: no gradient for {dead}"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", TRAINABLE)
def test_overfits_one_tiny_batch(name: str, dims: int, smooth_volume, decimate) -> None:
    scale = (2,) * dims
    hr = smooth_volume((2, 1, *([16] * dims)), seed=1)
    ref = smooth_volume((2, 1, *([16] * dims)), seed=2)
    lr = decimate(hr, scale)
    # no global residual: the network itself must fit the image (with the tricubic skip the
    # first loss is already small, and a ratio to it says little)
    model = create_model(name, spatial_dims=dims, scale=scale, residual="none")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = model.loss(model(lr, ref), hr)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 8, f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"
