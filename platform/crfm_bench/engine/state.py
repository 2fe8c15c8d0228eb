"""Training state I/O: one ``state.pt`` per checkpoint (model, optimizer, epoch, step).

The same file is what Ray Train and Ray Tune checkpoint, what the in-process session keeps,
and what ``crfm-bench run`` stores under ``runs/models/<name>/checkpoint/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "state.pt"


def training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    **extra: Any,
) -> dict[str, Any]:
    """The state after ``epoch`` (0-based) and ``step`` optimiser steps; ``extra`` is kept
    as is (model name, tuning overrides, seed)."""
    core = unwrap(model)
    return {
        "model": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": int(epoch),
        "step": int(step),
        **extra,
    }


def save_state(state: dict[str, Any], folder: Path) -> Path:
    """Write ``state`` to ``folder/state.pt``; return the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    torch.save(state, path)
    return path


def read_state(folder: Path) -> dict[str, Any]:
    """The state saved by :func:`save_state` in ``folder`` (tensors on the CPU)."""
    return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def load_state(checkpoint) -> dict[str, Any]:
    """The state in a Ray ``Checkpoint``, wherever its storage is (a local folder, shared
    storage or S3: ``as_directory`` fetches it)."""
    with checkpoint.as_directory() as d:
        return read_state(Path(d))


def restore_state(
    state: dict[str, Any] | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[int, int]:
    """Load ``state`` into ``model`` (and ``optimizer``); return ``(first epoch to run, step)``:
    ``(0, 0)`` without a state."""
    if state is None:
        return 0, 0
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
        match_parameter_layout(optimizer)
    return int(state["epoch"]) + 1, int(state["step"])


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Lay every per-parameter state tensor (Adam's moments) out like its parameter.

    ``load_state_dict`` keeps the saved strides, and the fused Adam walks a parameter, its
    gradient and its moments in memory order: moments saved by a model of another layout
    (a checkpoint of a contiguous model resumed by a channels-last one,
    :attr:`~crfm_bench.models.base.SRModel.channels_last_dims`) would be paired with the wrong
    weights, silently. The values are kept; only their layout changes.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if (
                    torch.is_tensor(value)
                    and value.shape == p.shape
                    and value.stride() != p.stride()
                ):
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model
