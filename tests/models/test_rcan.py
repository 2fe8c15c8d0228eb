from __future__ import annotations

import torch

from crfm_bench.models import create_model
from crfm_bench.models.rcan import ChannelAttention


def test_rcan_paper_is_the_paper_network_with_its_parameter_count() -> None:
    # RCAN (Zhang et al. 2018): 10 groups x 20 RCABs, 64 feats, reduction 16; the x2 model
    # has about 15.4 M parameters (the paper's Fig. 7 plots "about 16M"; 15.44 M counted on
    # the authors' released RGB model). Ours is single-channel: 2 x 9 x 64 x 2 weights fewer.
    model = create_model("rcan", spatial_dims=2, scale=2, size="paper")
    assert len(model.body) == 11 and len(model.body[0].body) == 21
    n = model.num_parameters()
    assert abs(n - 15.44e6) / 15.44e6 < 0.01, n


def test_channel_attention_rescales_each_channel_by_a_factor_in_0_1() -> None:
    ca = ChannelAttention(3, channels=8, reduction=2)
    x = torch.rand(2, 8, 4, 4, 4) + 0.1
    ratio = ca(x) / x
    # one factor per (sample, channel), constant over space, strictly between 0 and 1
    torch.testing.assert_close(ratio, ratio[..., :1, :1, :1].expand_as(ratio))
    assert ((ratio > 0) & (ratio < 1)).all()
