from __future__ import annotations

import torch
import torch.nn.functional as F

from crfm_bench.models import create_model
from crfm_bench.models.minet import ChannelSpatialAttention, LayerAttention


def test_csam_is_a_3d_convolution_over_channels_and_plane_in_2d() -> None:
    # MINet's CSAM runs a 3x3x3 Conv3d over (channel, H, W); our (d+1)-D conv must equal it.
    csam = ChannelSpatialAttention(spatial_dims=2)
    with torch.no_grad():
        csam.gamma.fill_(0.7)
    x = torch.randn(2, 5, 6, 7)
    weight = csam.weight.detach().reshape(1, 1, 3, 3, 3)
    conv = F.conv3d(x[:, None], weight, csam.bias.detach(), padding=1)[:, 0]
    expected = x + 0.7 * x * torch.sigmoid(conv)
    torch.testing.assert_close(csam(x), expected)


def test_csam_in_3d_equals_three_convolutions_over_shifted_channel_planes_with_gradients() -> None:
    # The 3D CSAM is a 4-D conv (channel x D x H x W); torch has no conv4d, so the reference is
    # the sum over the 3 channel taps of a single-channel conv3d on the shifted planes.
    csam = ChannelSpatialAttention(spatial_dims=3)
    with torch.no_grad():
        csam.gamma.fill_(0.5)
    x = torch.randn(2, 4, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    csam = csam.double()
    b, c = x.shape[:2]
    padded = F.pad(x, (0, 0, 0, 0, 0, 0, 1, 1))
    acc = (
        sum(
            F.conv3d(padded[:, k : k + c].reshape(b * c, 1, 5, 6, 7), csam.weight[k], padding=1)
            for k in range(3)
        ).reshape(b, c, 5, 6, 7)
        + csam.bias
    )
    expected = x + 0.5 * x * torch.sigmoid(acc)
    out = csam(x)
    torch.testing.assert_close(out, expected)
    g_out = torch.autograd.grad(out.square().sum(), [x, csam.weight, csam.bias])
    g_ref = torch.autograd.grad(expected.square().sum(), [x, csam.weight, csam.bias])
    for got, want in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(got, want)


def test_layer_attention_starts_as_identity_and_mixes_layers_when_gamma_grows() -> None:
    lam = LayerAttention()
    x = torch.randn(2, 3, 4, 5, 5)
    torch.testing.assert_close(lam(x), x.reshape(2, 12, 5, 5))
    with torch.no_grad():
        lam.gamma.fill_(1.0)
    assert (lam(x) - x.reshape(2, 12, 5, 5)).abs().max() > 1e-3


def test_minet_runs_both_branches_on_the_hr_grid() -> None:
    model = create_model("minet", spatial_dims=3, scale=(1, 1, 4))
    lr, ref = torch.rand(1, 1, 6, 6, 2), torch.rand(1, 1, 6, 6, 8)
    feats: dict[str, tuple[int, ...]] = {}

    def record(key: str):
        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
            feats[key] = tuple(output.shape)

        return hook

    model.ref_groups[0].register_forward_hook(record("ref"))
    model.target_groups[0].register_forward_hook(record("tgt"))
    assert model(lr, ref).shape == (1, 1, 6, 6, 8)
    assert feats["ref"][2:] == feats["tgt"][2:] == (6, 6, 8)
