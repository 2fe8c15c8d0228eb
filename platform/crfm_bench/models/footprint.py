"""Activation-memory accounting on any device, by counting what autograd keeps.

On CPU there is no ``torch.cuda.max_memory_allocated``; the memory a training step needs
beyond the weights is dominated by the tensors autograd saves for the backward pass.
:func:`saved_tensor_bytes` runs a forward pass under ``saved_tensors_hooks`` and sums the
bytes of the distinct storages saved (weights included once). Used to check that
windowed attention keeps memory linear in the volume and by ``benchmarks/models.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs."""
    storages: dict[int, int] = {}
    keep: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        storages[ptr] = max(storages.get(ptr, 0), storage.nbytes())
        keep.append(t)  # keep alive so a freed storage's address is not reused and miscounted
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    total = sum(storages.values())
    keep.clear()
    del result
    return total
