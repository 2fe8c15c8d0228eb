"""The pure parts of training: one optimiser step, the validation PSNR, the schedule, the
optimiser and mixed precision. No Ray, no files: the loop (:mod:`crfm_bench.engine.loop`)
wires them together, the benchmark (``benchmarks/engine.py``) times them, tests call them on a
tiny model.

A batch is a dict of tensors ``lr`` (B, 1, *LR patch), ``hr`` (B, 1, *HR patch) and ``ref``
(B, 1, *HR patch; read only by a model with ``needs_reference``), as
:class:`crfm_bench.engine.data.PatchDataset` yields them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from crfm_bench.engine.state import unwrap

# Adam's update implementation on the CPU: "fused" measured faster than "foreach" per step
# on a tiny model (benchmarks/engine.py --optimizers); both give the same update.
ADAM_IMPL = "fused"


@dataclass(frozen=True)
class Precision:
    """Autocast settings: ``dtype`` None means full precision. ``scaler`` is needed for fp16."""

    device: torch.device
    dtype: torch.dtype | None = None

    @classmethod
    def for_mode(cls, mode: str, device: torch.device) -> Precision:
        """``auto`` is bf16 (or fp16) on CUDA and off elsewhere; ``off``, ``fp16``, ``bf16``."""
        if mode == "off" or (mode == "auto" and device.type != "cuda"):
            return cls(device)
        if mode == "fp16":
            return cls(device, torch.float16)
        if mode == "bf16":
            return cls(device, torch.bfloat16)
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return cls(device, torch.bfloat16 if bf16_ok else torch.float16)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def lr_at(step: int, total: int, base_lr: float, warmup: int = 20) -> float:
    """Linear warm-up then cosine decay to 5 % of ``base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float = 0.0,
    impl: str = ADAM_IMPL,
) -> torch.optim.Adam:
    """Adam with the update implementation ``impl``: ``fused``, ``foreach`` or ``single``
    (the per-parameter loop)."""
    kw = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}
    if impl not in kw:
        raise ValueError(f"optimizer implementation {impl!r}: one of {', '.join(kw)}")
    return torch.optim.Adam(list(parameters), lr=lr, weight_decay=weight_decay, **kw[impl])


def _device(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device):
    lr = batch["lr"].to(device)
    ref = batch["ref"].to(device) if unwrap(model).needs_reference else None
    return lr, ref


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    lr: float,
    grad_clip: float = 0.0,
    precision: Precision | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One optimiser step at learning rate ``lr`` on ``batch``; return the loss (the model's
    own :meth:`loss`, in float32). ``model`` may be wrapped (DDP): the forward goes through the
    wrapper, the loss and gradient clipping (``grad_clip`` > 0: max global norm) through the
    model inside."""
    core = unwrap(model)
    precision = precision or Precision(_device(core))
    scaler = scaler or torch.amp.GradScaler(precision.device.type, enabled=False)
    for group in optimizer.param_groups:
        group["lr"] = lr
    lr_b, ref_b = _inputs(model, batch, precision.device)
    hr_b = batch["hr"].to(precision.device)
    with precision.autocast():
        sr = model(lr_b, ref_b)
        loss = core.loss(sr.float(), hr_b)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(core.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def patch_psnrs(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, float64) of each patch of a batch, each clipped to [0, 1], data_range 1."""
    sr = sr.double().clamp(0, 1)
    hr = hr.double().clamp(0, 1)
    mse = ((sr - hr) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def psnr_batch(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Mean PSNR (dB) over a batch of patches, each clipped to [0, 1], data_range 1."""
    return float(patch_psnrs(sr, hr).mean())


def validate(
    model: torch.nn.Module,
    samples: list[dict[str, torch.Tensor]],
    precision: Precision | None = None,
    batch_size: int = 1,
) -> float:
    """Mean patch PSNR (dB) of ``model`` over ``samples`` (unbatched dataset items, each
    ``lr`` (1, *LR patch) etc.), in eval mode, ``batch_size`` patches per forward pass; the
    model's mode is restored.

    Every patch gets its own PSNR whatever the batching (the models treat the samples of a
    batch independently). Batches matter for speed: torch runs a batch-1 3D convolution of a
    12^3 patch on its slow im2col path, so one patch per call cost 4 to 7 times a batch of 4.
    """
    core = unwrap(model)
    precision = precision or Precision(_device(core))
    was_training = core.training
    core.eval()
    psnrs: list[torch.Tensor] = []
    step = max(1, int(batch_size))
    with torch.no_grad(), precision.autocast():
        for i in range(0, len(samples), step):
            chunk = samples[i : i + step]
            batch = {k: torch.stack([s[k] for s in chunk]) for k in chunk[0]}
            lr, ref = _inputs(core, batch, precision.device)
            psnrs.append(patch_psnrs(core(lr, ref), batch["hr"].to(precision.device)))
    core.train(was_training)
    return float(torch.cat(psnrs).mean()) if psnrs else float("nan")
