"""Efficiency columns of the leaderboard: parameters, MACs, training FLOPs, activation memory."""

from __future__ import annotations

import torch


def count_macs(model: torch.nn.Module, lr: torch.Tensor, ref: torch.Tensor | None) -> int:
    """Multiply-accumulates of one forward pass (torch's FlopCounterMode FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(lr, ref)
    return int(counter.get_total_flops() // 2)


def train_step_flops(
    model: torch.nn.Module, lr: torch.Tensor, ref: torch.Tensor | None, hr: torch.Tensor
) -> int:
    """FLOPs of one training step's forward + backward on the batch ``(lr, ref, hr)``, with the
    model's own loss (torch's FlopCounterMode: convolutions and matmuls; elementwise ops and
    the optimizer are not counted). The gradients it makes are dropped."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.train()
    with FlopCounterMode(display=False) as counter:
        model.loss(model(lr, ref), hr).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return int(counter.get_total_flops())


def activation_bytes(model: torch.nn.Module, lr: torch.Tensor, ref: torch.Tensor | None) -> int:
    """Peak activation memory of a training forward pass.

    On CUDA: ``torch.cuda.max_memory_allocated`` around the pass; elsewhere the bytes of the
    tensors autograd saves for backward (:func:`crfm_bench.models.footprint.saved_tensor_bytes`).
    """
    from crfm_bench.models.footprint import saved_tensor_bytes

    if lr.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lr.device)
        base = torch.cuda.memory_allocated(lr.device)
        model(lr, ref).sum().backward()
        return int(torch.cuda.max_memory_allocated(lr.device) - base)
    return saved_tensor_bytes(lambda: model(lr, ref))
