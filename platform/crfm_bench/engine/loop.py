"""The training loop: short wiring of the parts, run wherever a :class:`Session` says.

* Ray Train runs :func:`train_loop_per_worker` on every worker of a ``TorchTrainer``
  (:mod:`crfm_bench.engine.trainer`);
* Ray Tune runs :func:`tune_trial` in each single-process trial (:mod:`crfm_bench.engine.tune`);
* tests and ``benchmarks/engine.py`` call :func:`train_loop` with a
  :class:`~crfm_bench.engine.session.LocalSession`.

Each epoch: ``steps_per_epoch`` calls of :func:`~crfm_bench.engine.step.train_step` on
aligned patches (sharded across workers by Ray's DistributedSampler), the validation PSNR of
:func:`~crfm_bench.engine.step.validate` on fixed validation patches, then one report with
the training state (rank 0 only). On start the loop resumes from the session's state if
there is one (a worker group restarted after a failure, a rerun with the same name and
storage, a restored Tune trial, a local checkpoint folder).

``config``: ``params`` (dict of :class:`~crfm_bench.config.Params`), ``model`` (name),
``cases`` (``(train, val)`` case lists, or a Ray ObjectRef to them), and optionally
``overrides`` (tuning values), ``epochs``, ``seed`` (training seed; default ``train.seed``),
``pid_dir`` (each rank writes ``rank<k>.pid`` there).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crfm_bench.config import Params
from crfm_bench.engine.build import base_lr, build_model
from crfm_bench.engine.memory import reuse_freed_memory
from crfm_bench.engine.session import Session, TrainSession, TuneSession
from crfm_bench.engine.state import restore_state, training_state, unwrap
from crfm_bench.engine.step import Precision, lr_at, make_optimizer, train_step, validate


@dataclass(frozen=True)
class LoopSpec:
    """What one training run does, resolved from ``config`` once."""

    params: Params
    model: str
    overrides: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    seed: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LoopSpec:
        params = Params.model_validate(config["params"])
        name = config["model"]
        mcfg = params.model_config_for(name)
        overrides = dict(config.get("overrides") or {})
        seed = config.get("seed")
        return cls(
            params=params,
            model=name,
            overrides=overrides,
            epochs=int(config.get("epochs") or mcfg.epochs or params.train.epochs),
            batch_size=mcfg.batch_size or params.train.batch_size,
            lr=base_lr(params, name, overrides),
            seed=params.train.seed if seed is None else int(seed),
        )


def set_threads(cpus: int) -> None:
    """Intra-op threads = the CPUs the worker holds; one inter-op thread. Data loading stays
    in this process (``DataLoader`` without workers), so nothing else competes for them."""
    torch.set_num_threads(max(1, cpus))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass


def _cases(ref: Any) -> tuple[list, list]:
    if isinstance(ref, tuple | list):
        return ref[0], ref[1]
    import ray

    return ray.get(ref)


def train_loop(config: dict[str, Any], session: Session) -> None:
    """Train ``config["model"]``; one ``session.report`` per epoch (see the module doc)."""
    from crfm_bench.engine.data import PatchDataset

    spec = LoopSpec.from_config(config)
    t = spec.params.train
    set_threads(t.cpus_per_worker)
    reuse_freed_memory()
    if config.get("pid_dir"):
        pid_dir = Path(config["pid_dir"])
        pid_dir.mkdir(parents=True, exist_ok=True)
        (pid_dir / f"rank{session.rank}.pid").write_text(str(os.getpid()))

    train_cases, val_cases = _cases(config["cases"])
    scale = spec.params.task.factors
    torch.manual_seed(spec.seed)
    model = session.prepare_model(build_model(spec.params, spec.model, spec.overrides))
    opt = make_optimizer(unwrap(model).parameters(), spec.lr, t.weight_decay)
    start_epoch, step = restore_state(session.restore(), model, opt)
    resumed_from = start_epoch
    precision = Precision.for_mode(t.mixed_precision, session.device())
    scaler = precision.scaler()

    dataset = PatchDataset(
        train_cases,
        scale,
        t.patch_size,
        length=t.steps_per_epoch * spec.batch_size * session.world_size,
        seed=spec.seed,
        foreground_fraction=t.foreground_fraction,
    )
    loader = session.prepare_data_loader(
        torch.utils.data.DataLoader(
            dataset, batch_size=spec.batch_size, shuffle=False, drop_last=True
        )
    )
    # validation patches depend on the base seed only: every training seed is validated alike
    val_set = PatchDataset(val_cases, scale, t.patch_size, t.val_patches, seed=t.seed + 1)
    val_samples = [val_set[i] for i in range(len(val_set))]
    total_steps = spec.epochs * t.steps_per_epoch

    for epoch in range(start_epoch, spec.epochs):
        dataset.set_epoch(epoch)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        losses = []
        for batch in loader:
            lr = lr_at(step, total_steps, spec.lr)
            losses.append(train_step(model, opt, batch, lr, t.grad_clip, precision, scaler))
            step += 1
        train_seconds = time.perf_counter() - t0
        metrics = {
            "epoch": epoch,
            "epochs": spec.epochs,
            "step": step,
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "val_psnr": validate(model, val_samples, precision, spec.batch_size),
            "epoch_seconds": train_seconds,
            "lr": opt.param_groups[0]["lr"],
            "resumed_from": resumed_from,  # epoch this worker attempt started at (0: fresh)
        }
        state = None
        if session.rank == 0:
            state = training_state(
                model,
                opt,
                epoch,
                step,
                model_name=spec.model,
                overrides=spec.overrides,
                seed=spec.seed,
            )
        session.report(metrics, state)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: :func:`train_loop` in a :class:`TrainSession`."""
    train_loop(config, TrainSession())


def tune_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: :func:`train_loop` in a :class:`TuneSession`, the trial's
    sampled values as overrides."""
    base = dict(config["base"])
    base["overrides"] = {**base.get("overrides", {}), **config["sample"]}
    train_loop(base, TuneSession())
