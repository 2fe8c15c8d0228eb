"""Where the training loop runs: a small :class:`Session` object handed to
:func:`crfm_bench.engine.loop.train_loop`.

Three implementations, one protocol:

* :class:`TrainSession` - a worker of a Ray Train ``TorchTrainer`` (rank, DDP, checkpoints
  through ``ray.train.report``; the driver's callbacks see every report);
* :class:`TuneSession` - a Ray Tune function trial (one process, reports drive ASHA);
* :class:`LocalSession` - this process, no Ray: reports kept in a list (and handed to
  ``on_report`` callbacks), checkpoints optionally written to a folder it resumes from.
  Fast tests and ``benchmarks/engine.py`` run the loop through it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from crfm_bench.engine.state import load_state, read_state, save_state


@runtime_checkable
class Session(Protocol):
    """The loop's view of where it runs."""

    rank: int
    world_size: int

    def device(self) -> torch.device: ...

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def prepare_data_loader(self, loader: torch.utils.data.DataLoader) -> Any: ...

    def restore(self) -> dict[str, Any] | None:
        """The training state to resume from, or None for a fresh start."""
        ...

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """One epoch's metrics, with the training state to checkpoint (rank 0) or None."""
        ...


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TrainSession:
    """A Ray Train worker (Train V2): ``get_context``, ``prepare_model`` (DDP), ``report``."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def prepare_data_loader(self, loader):
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader)

    def restore(self) -> dict[str, Any] | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return None if ckpt is None else load_state(ckpt)

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        import ray.train

        if state is None:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_state(state, Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class TuneSession:
    """A Ray Tune function trial: one process; each report drives the scheduler (ASHA)."""

    rank = 0
    world_size = 1

    def device(self) -> torch.device:
        return _default_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device())

    def prepare_data_loader(self, loader):
        return loader

    def restore(self) -> dict[str, Any] | None:
        import ray.tune

        ckpt = ray.tune.get_checkpoint()
        return None if ckpt is None else load_state(ckpt)

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        import ray.tune

        if state is None:
            ray.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_state(state, Path(tmp))
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(tmp))


class LocalSession:
    """This process, no Ray. ``checkpoint_dir``: each report's state is written there
    (``state.pt``, replaced) and a new session on the same folder resumes from it.
    ``on_report``: callables ``f(metrics)`` called after each report (progress, logging)."""

    rank = 0
    world_size = 1

    def __init__(
        self,
        checkpoint_dir: Path | None = None,
        on_report: list[Callable[[dict[str, Any]], None]] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.on_report = list(on_report or [])
        self._device = torch.device(device)
        self.reports: list[dict[str, Any]] = []
        self.last_state: dict[str, Any] | None = None

    def device(self) -> torch.device:
        return self._device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self._device)

    def prepare_data_loader(self, loader):
        return loader

    def restore(self) -> dict[str, Any] | None:
        if self.checkpoint_dir and (self.checkpoint_dir / "state.pt").is_file():
            return read_state(self.checkpoint_dir)
        return None

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.reports.append(dict(metrics))
        if state is not None:
            self.last_state = state
            if self.checkpoint_dir is not None:
                from crfm_bench.atomic import atomic_dir

                with atomic_dir(self.checkpoint_dir) as stage:
                    save_state(state, stage)
        for callback in self.on_report:
            callback(dict(metrics))
