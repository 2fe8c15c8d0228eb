"""A Ray Train rendezvous for the local, loopback-only Ray that opens no port.

Ray's default ``TorchConfig`` starts ``torch.distributed``'s TCPStore on rank 0 (``env://``
or ``tcp://``). That store listens on every interface (torch gives it no bind address) and
has no authentication, so on the local Ray it would be the one port open beyond loopback
(found by ``tests/engine/test_ray_security.py``). :class:`LoopbackTorchConfig` replaces the
rendezvous, for the local Ray only (:func:`torch_config`):

* one worker: no process group at all. ``ray.train.torch.prepare_model`` wraps nothing in
  DDP and ``prepare_data_loader`` adds no distributed sampler when the world size is 1;
* several workers (all on this machine): ``init_method="file://..."``, a FileStore in the
  temp dir instead of a TCPStore, and gloo's own sockets on the loopback device
  (``GLOO_SOCKET_IFNAME=lo``).

It extends Ray 2.60's ``_TorchBackend`` (its ``on_shutdown`` and training hooks are kept), so
a Ray upgrade is checked by the security test.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend


def file_process_group(
    backend: str, world_rank: int, world_size: int, store: str, timeout_s: int
) -> None:
    """On a worker: the process group through a FileStore; gloo's (and NCCL's bootstrap)
    sockets on the loopback device."""
    import torch.distributed as dist

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    os.environ["NCCL_SOCKET_IFNAME"] = "lo"
    os.environ.update({"RANK": str(world_rank), "WORLD_SIZE": str(world_size)})
    dist.init_process_group(
        backend=backend,
        init_method=f"file://{store}",
        rank=world_rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


class LoopbackTorchBackend(_TorchBackend):
    """``_TorchBackend`` whose ``on_start`` rendezvouses through a file (or not at all)."""

    def on_start(self, worker_group, backend_config) -> None:
        import ray

        n = len(worker_group)
        if n == 1:
            return
        backend = backend_config.backend or (
            "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        )
        store = Path(tempfile.gettempdir()) / f"crfm-bench-pg-{uuid.uuid4().hex}"
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    file_process_group,
                    backend=backend,
                    world_rank=rank,
                    world_size=n,
                    store=str(store),
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(n)
            ]
        )


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` for the local loopback-only Ray (see the module docstring)."""

    @property
    def backend_cls(self):
        return LoopbackTorchBackend


def torch_config():
    """The Ray Train ``TorchConfig`` for a training worker group.

    On a cluster: Ray's own (the rendezvous store of rank 0 must be reachable from the other
    nodes). On the local loopback-only Ray: :class:`LoopbackTorchConfig`, because
    ``torch.distributed``'s TCPStore, which Ray's default rendezvous starts on rank 0, listens
    on every interface (torch has no bind address for it) and has no authentication.
    """
    from crfm_bench.cluster import loopback_ray

    return LoopbackTorchConfig() if loopback_ray() else TorchConfig()
