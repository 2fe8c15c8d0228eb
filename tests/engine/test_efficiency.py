"""The leaderboard's efficiency columns: forward MACs and training FLOPs per step."""

from __future__ import annotations

import pytest
import torch

from crfm_bench.config import Params
from crfm_bench.engine.efficiency import count_macs, train_step_flops
from crfm_bench.engine.run import efficiency
from crfm_bench.models import create_model


def test_a_training_step_costs_two_to_three_forward_passes() -> None:
    # Backward computes the weight gradient of every conv (as many FLOPs as its forward) and
    # the input gradient of every conv but the first (its input needs none): 2x to 3x forward.
    model = create_model("edsr", spatial_dims=3, scale=(2, 2, 2), n_feats=8, n_blocks=2)
    lr, hr = torch.rand(2, 1, 6, 6, 6), torch.rand(2, 1, 12, 12, 12)
    forward = 2 * count_macs(model, lr, None)
    step = train_step_flops(model, lr, None, hr)
    assert 2.0 * forward < step < 3.0 * forward
    assert all(p.grad is None for p in model.parameters())  # nothing left behind


def test_efficiency_counts_the_training_batch_of_the_model() -> None:
    params = Params.model_validate(
        {
            "train": {"batch_size": 2, "patch_size": 12},
            "eval": {"window": 12},
            "models": {"edsr": {"batch_size": 4, "options": {"n_feats": 8, "n_blocks": 1}}},
        }
    )
    model = create_model("edsr", spatial_dims=3, scale=(2, 2, 2), n_feats=8, n_blocks=1)
    at_4 = efficiency(model, params, (24, 24, 24), "edsr")
    at_2 = efficiency(model, params, (24, 24, 24))  # no name: train.batch_size
    assert at_4["train_gflop_step"] == pytest.approx(2 * at_2["train_gflop_step"], rel=1e-6)
    assert at_4["macs_g"] == at_2["macs_g"] > 0
    free = efficiency(create_model("tricubic", spatial_dims=3, scale=(2, 2, 2)), params, (24,) * 3)
    assert "train_gflop_step" not in free and free["params"] == 0
