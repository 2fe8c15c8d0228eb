"""Channels-last models (``SRModel.channels_last_dims``) through the engine's training state:
a resumed fused Adam pairs each moment with its weight, and DDP averages their gradients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch

from crfm_bench.engine.state import read_state, restore_state, save_state, training_state
from crfm_bench.engine.step import make_optimizer, train_step
from crfm_bench.models import create_model

RCAN = {"n_feats": 8, "n_groups": 1, "n_blocks": 1, "reduction": 4}


def batch(seed: int, n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "lr": torch.rand(n, 1, 6, 6, 6, generator=g),
        "hr": torch.rand(n, 1, 12, 12, 12, generator=g),
    }


def fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("rcan", 3, 2, **RCAN)


def test_a_resumed_fused_adam_pairs_each_moment_with_its_weight(tmp_path):
    model = fresh()
    weights = [p for p in model.parameters() if p.ndim == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    opt = make_optimizer(model.parameters(), lr=1e-2)  # the engine's: fused
    train_step(model, opt, batch(1), lr=1e-2)
    save_state(training_state(model, opt, epoch=0, step=1), tmp_path)
    state = read_state(tmp_path)
    # a checkpoint whose moments are laid out contiguously (written by a contiguous-layout
    # version of the model): the same values, other strides
    old = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
    for k, st in state["optimizer"]["state"].items():
        old["state"][k] = {
            key: v.contiguous() if torch.is_tensor(v) and v.ndim == 5 else v
            for key, v in st.items()
        }
    assert any(
        not v.is_contiguous(memory_format=torch.channels_last_3d)
        for st in old["state"].values()
        for v in st.values()
        if torch.is_tensor(v) and v.ndim == 5 and v.shape[1] > 1
    )
    train_step(model, opt, batch(2), lr=1e-2)  # the uninterrupted run's second step

    resumed = fresh()
    opt2 = make_optimizer(resumed.parameters(), lr=1e-2)
    assert restore_state({**state, "optimizer": old}, resumed, opt2) == (1, 1)
    for p in resumed.parameters():
        for v in opt2.state[p].values():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert v.stride() == p.stride()
    train_step(resumed, opt2, batch(2), lr=1e-2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


WORKER = textwrap.dedent(
    """
    import datetime, sys, torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    sys.path.insert(0, sys.argv[4])
    from test_layouts import RCAN, batch, fresh
    from crfm_bench.engine.step import make_optimizer, train_step
    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=120),
    )
    model = DistributedDataParallel(fresh())
    opt = make_optimizer(model.parameters(), lr=1e-3)
    train_step(model, opt, batch(10 + rank), lr=1e-3)
    torch.save([p.grad for p in model.module.parameters()], out)
    dist.destroy_process_group()
    """
)


def test_ddp_averages_the_gradients_of_a_channels_last_model(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    here = os.path.dirname(__file__)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(port), str(tmp_path / f"g{r}.pt"), here],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
    finally:  # a rank left waiting for a failed peer is stopped, by its PID
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    g0, g1 = (torch.load(tmp_path / f"g{r}.pt") for r in range(2))
    # the reference: one process, both ranks' samples in one batch (the mean of their losses)
    model = fresh()
    both = {k: torch.cat([batch(10)[k], batch(11)[k]]) for k in ("lr", "hr")}
    train_step(model, make_optimizer(model.parameters(), lr=1e-3), both, lr=1e-3)
    for a, b, p in zip(g0, g1, model.parameters(), strict=True):
        assert torch.equal(a, b)  # every replica holds the same averaged gradient
        if p.ndim == 5:  # in its weight's layout
            assert a.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6 * float(p.grad.abs().max()))
