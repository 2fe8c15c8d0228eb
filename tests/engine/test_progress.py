"""Progress without a terminal: one plain line per epoch (run) and per trial result (tune)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from crfm_bench.engine.loop import train_loop
from crfm_bench.engine.progress import ProgressBoard, TrialTable
from crfm_bench.engine.session import LocalSession


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_a_non_terminal_gets_one_line_per_epoch(params, cases, loop_config):
    console, out = plain_console()
    board = ProgressBoard(console)
    assert board.live is False
    board.start("edsr", 3)
    train_loop(
        loop_config(params, cases), LocalSession(on_report=[lambda m: board.update("edsr", m)])
    )
    board.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for n, line in enumerate(lines, start=1):
        assert line.startswith(f"edsr: epoch {n}/3  loss ")
        assert " val PSNR " in line and " dB  ETA " in line
    assert lines[-1].endswith("ETA 0s")


def test_a_resumed_run_counts_from_where_it_resumed():
    console, _ = plain_console()
    board = ProgressBoard(console, live=False)
    line = board.update(
        "crfm", {"epoch": 7, "epochs": 10, "train_loss": 0.5, "val_psnr": 20.0, "resumed_from": 7}
    )
    assert line.startswith("crfm: epoch 8/10  loss 0.50000  val PSNR 20.00 dB  ETA ")


def test_trials_print_one_line_per_result_without_a_terminal():
    console, out = plain_console()
    table = TrialTable(console, epochs=2)
    table.update("t1", {"lr": 0.001}, {"epoch": 0, "train_loss": 0.1, "val_psnr": 21.0})
    table.update("t2", {"lr": 0.01}, {"epoch": 0, "train_loss": 0.2, "val_psnr": 19.0})
    table.update("t1", {"lr": 0.001}, {"epoch": 1, "train_loss": 0.05, "val_psnr": 20.5})
    lines = out.getvalue().splitlines()
    assert lines == [
        "trial t1 (lr=0.001): epoch 1/2  loss 0.10000  val PSNR 21.00 dB",
        "trial t2 (lr=0.01): epoch 1/2  loss 0.20000  val PSNR 19.00 dB",
        "trial t1 (lr=0.001): epoch 2/2  loss 0.05000  val PSNR 20.50 dB",
    ]
    assert table.rows["t1"]["best"] == 21.0


AGAIN = """
from crfm_bench import cluster
from crfm_bench.config import RayConfig
from crfm_bench.engine import progress
import ray

cluster.ensure_ray(RayConfig(num_cpus=1, dashboard=False))
first = progress._shared_queue()
assert progress._shared_queue() is first  # one queue actor for the trainings of a Ray
ray.shutdown()
cluster._local = False
cluster.ensure_ray(RayConfig(num_cpus=1, dashboard=False))
second = progress._shared_queue()
second.put(("edsr", {"epoch": 0}), timeout=10)
print("GOT", second is not first, second.get(timeout=10))
ray.shutdown()
"""


@pytest.mark.slow
def test_a_ray_started_again_in_the_process_gets_its_own_progress_queue():
    """Job ids start again at 1 in a new Ray: the shared queue is keyed by the driver's node
    too, so a second Ray never gets the first one's (dead) queue actor."""
    res = subprocess.run([sys.executable, "-c", AGAIN], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "GOT True ('edsr', {'epoch': 0})" in res.stdout, res.stdout + res.stderr[-2000:]
