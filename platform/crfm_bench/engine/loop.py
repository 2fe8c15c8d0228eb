"""The training loop: run by Ray Train on every worker of a TorchTrainer, and by Ray Tune
inside each trial (one loop, two sessions).

Each epoch: ``steps_per_epoch`` optimiser steps on aligned patches (sharded across workers
by Ray's DistributedSampler), a validation PSNR on a fixed set of validation patches, then a
report with a checkpoint (written by rank 0 only). On start, the loop resumes from the
session's checkpoint if Ray hands it one (a restarted worker group after a failure, a rerun
of an interrupted run with the same name and storage, or a restored Tune trial).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "state.pt"


def load_state(checkpoint) -> dict:
    """The training state (model, optimizer, epoch, step) in a Ray checkpoint, wherever its
    storage is (a local folder, shared storage or S3: ``as_directory`` fetches it)."""
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def amp_settings(mode: str, device: torch.device) -> tuple[bool, torch.dtype | None]:
    """(enabled, dtype) for autocast: ``auto`` is bf16 (or fp16) on CUDA and off elsewhere."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return False, None
    if mode == "fp16":
        return True, torch.float16
    if mode == "bf16":
        return True, torch.bfloat16
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return True, torch.bfloat16 if bf16_ok else torch.float16


def build_model(params_dict: dict, name: str, overrides: dict[str, Any] | None = None):
    """The model ``name`` as the benchmark configures it (size, options, tuning overrides)."""
    from crfm_bench.config import Params
    from crfm_bench.models import create_model
    from crfm_bench.scale import parse_scale

    params = Params.model_validate(params_dict)
    mcfg = params.model_config_for(name)
    options = {**mcfg.options, **(overrides or {})}
    options = {k: v for k, v in options.items() if k not in ("lr",)}
    scale = parse_scale(params.task.scale, what="task.scale")
    return create_model(name, spatial_dims=3, scale=scale, size=mcfg.size, **options)


def psnr_batch(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Mean PSNR (dB) over a batch of patches, each clipped to [0, 1], data_range 1."""
    sr = sr.float().clamp(0, 1)
    hr = hr.float().clamp(0, 1)
    mse = ((sr - hr) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


def lr_at(step: int, total: int, base_lr: float, warmup: int = 20) -> float:
    """Linear warm-up then cosine decay to 5 % of ``base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


class TrainSession:
    """The loop's view of Ray Train: rank, device, DDP wrapping, reports and checkpoints."""

    def __init__(self) -> None:
        import ray.train

        self.ctx = ray.train.get_context()

    def rank_world(self) -> tuple[int, int]:
        return self.ctx.get_world_rank(), self.ctx.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def prepare_data_loader(self, loader):
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader)

    def get_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)


class TuneSession:
    """The loop's view of a Ray Tune trial: one process, reports to Tune (drives ASHA)."""

    def rank_world(self) -> tuple[int, int]:
        return 0, 1

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare_model(self, model):
        return model.to(self.device())

    def prepare_data_loader(self, loader):
        return loader

    def get_checkpoint(self):
        import ray.tune

        return ray.tune.get_checkpoint()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.tune

        ckpt = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=ckpt)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point. ``config``: params (dict), model, cases (ObjectRef), overrides, pid_dir."""
    train_loop(config, TrainSession())


def tune_trial(config: dict) -> None:
    """Ray Tune function trainable: the same loop, with the trial's sampled values as overrides."""
    base = dict(config["base"])
    base["overrides"] = {**base.get("overrides", {}), **config["sample"]}
    train_loop(base, TuneSession())


def tune_trial_distributed(config: dict) -> None:
    """Ray Tune function trainable for trials with several workers: the trial drives one Ray
    Train run (same loop, DDP) and forwards its epoch reports to Tune through
    ``TuneReportCallback`` (the Train V2 pattern: ``Tuner(TorchTrainer)`` is gone). The run
    is named after the trial and kept under ``base["storage"]``; its workers write their pids
    to ``<storage>/../pids/<trial>/``."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from crfm_bench.config import Params
    from crfm_bench.engine.trainer import fit_model

    base = config["base"]
    trial = ray.tune.get_context().get_trial_id()
    fit_model(
        Params.model_validate(base["params"]),
        base["model"],
        base["cases"],
        run_name=f"{base['model']}-{trial}",
        overrides={**base.get("overrides", {}), **config["sample"]},
        epochs=base["epochs"],
        pid_dir=Path(base["storage"]).parent / "pids" / trial,
        callbacks=[TuneReportCallback()],
        storage=base["storage"],
    )


def train_loop(config: dict, session) -> None:
    """The loop itself; ``session`` is a :class:`TrainSession` or :class:`TuneSession`."""
    import ray

    from crfm_bench.config import Params
    from crfm_bench.engine.data import PatchDataset
    from crfm_bench.scale import parse_scale

    params = Params.model_validate(config["params"])
    name = config["model"]
    overrides = dict(config.get("overrides") or {})
    mcfg = params.model_config_for(name)
    tcfg = params.train
    epochs = int(config.get("epochs") or mcfg.epochs or tcfg.epochs)
    batch_size = mcfg.batch_size or tcfg.batch_size
    base_lr = float(overrides.pop("lr", None) or mcfg.lr or tcfg.lr)
    torch.set_num_threads(max(1, tcfg.cpus_per_worker))

    rank, world = session.rank_world()
    if config.get("pid_dir"):
        pid_dir = Path(config["pid_dir"])
        pid_dir.mkdir(parents=True, exist_ok=True)
        (pid_dir / f"rank{rank}.pid").write_text(str(os.getpid()))

    train_cases, val_cases = ray.get(config["cases"])
    scale = parse_scale(params.task.scale, what="task.scale")
    seed = tcfg.seed
    torch.manual_seed(seed)
    model = build_model(config["params"], name, overrides)
    device = session.device()
    amp, amp_dtype = amp_settings(tcfg.mixed_precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)

    start_epoch = 0
    step = 0
    state = None
    ckpt = session.get_checkpoint()
    if ckpt is not None:
        state = load_state(ckpt)
        model.load_state_dict(state["model"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])

    resumed_from = start_epoch
    model = session.prepare_model(model)
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.Adam(core.parameters(), lr=base_lr, weight_decay=tcfg.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])

    dataset = PatchDataset(
        train_cases,
        scale,
        tcfg.patch_size,
        length=tcfg.steps_per_epoch * batch_size * world,
        seed=seed,
        foreground_fraction=tcfg.foreground_fraction,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, drop_last=True
    )
    loader = session.prepare_data_loader(loader)
    val_set = PatchDataset(val_cases, scale, tcfg.patch_size, tcfg.val_patches, seed=seed + 1)
    val_batches = [val_set[i] for i in range(len(val_set))]
    needs_ref = core.needs_reference
    total_steps = epochs * tcfg.steps_per_epoch

    def autocast():
        if not amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    for epoch in range(start_epoch, epochs):
        dataset.set_epoch(epoch)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        losses = []
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, base_lr)
            lr_b = batch["lr"].to(device)
            hr_b = batch["hr"].to(device)
            ref_b = batch["ref"].to(device) if needs_ref else None
            with autocast():
                sr = model(lr_b, ref_b)
                loss = core.loss(sr.float(), hr_b)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(core.parameters(), tcfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            step += 1
        train_seconds = time.perf_counter() - t0

        model.eval()
        psnrs = []
        with torch.no_grad(), autocast():
            for b in val_batches:
                ref_v = b["ref"][None].to(device) if needs_ref else None
                sr = core(b["lr"][None].to(device), ref_v)
                psnrs.append(psnr_batch(sr, b["hr"][None].to(device)))
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_psnr": float(np.mean(psnrs)),
            "epoch_seconds": train_seconds,
            "lr": opt.param_groups[0]["lr"],
            "resumed_from": resumed_from,  # epoch this worker attempt started at (0: fresh)
        }
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(
                    {
                        "model": core.state_dict(),
                        "optimizer": opt.state_dict(),
                        "epoch": epoch,
                        "step": step,
                        "model_name": name,
                        "overrides": overrides,
                    },
                    Path(tmp) / CHECKPOINT_FILE,
                )
                session.report(metrics, tmp)
        else:
            session.report(metrics, None)
