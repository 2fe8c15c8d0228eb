"""FMP / windowed-attention benchmark, and CRFM's training-step rate against a bare conv.

    python benchmarks/attention.py [--quick] [--threads 2] [--models crfm,crfm-noref,...]

Part 1: one FMP (tiny width, 16 channels, x2, both attentions, shifted windows) on LR
feature grids of 16^3 to 48^3 (= HR 32^3 to 96^3), batch 1: forward time, forward+backward
time and activation memory (bytes autograd saves for backward, the CPU stand-in for peak
memory, :mod:`crfm_bench.models.footprint`), and the same per voxel to show it is linear.

Part 2: one training step (forward + backward + Adam, batch 4, LR 12^3 -> HR 24^3, scale
x2) of each model against a bare ``Conv3d`` 3x3x3 with 32 channels (fwd+bwd on
4 x 32 x 24^3) measured in the same run, interleaved: step time (wall and this process'
CPU time), GFLOP per step (``torch.utils.flop_counter.FlopCounterMode``) and achieved
GFLOP/s as a fraction of the bare conv's. On a shared, oversubscribed machine the wall
ratio is distorted (a thread that waits for a descheduled sibling costs more in a step of
many small ops than in one big conv); the CPU-time ratio is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from timing import median_time
from torch.utils.flop_counter import FlopCounterMode

from crfm_bench.models import create_model
from crfm_bench.models.fmp import FMP
from crfm_bench.models.footprint import saved_tensor_bytes


def fmp_rows(sizes: list[int], repeats: int) -> list[dict[str, object]]:
    rows = []
    torch.manual_seed(0)
    fmp = FMP(3, 16, (2, 2, 2), window=8, heads=1, shift=True)
    for n in sizes:
        x = torch.randn(1, 16, n, n, n, requires_grad=True)
        ref = torch.randn(1, 16, 2 * n, 2 * n, 2 * n)

        def fwd(x: torch.Tensor = x, ref: torch.Tensor = ref) -> None:
            with torch.no_grad():
                fmp(x, ref)

        def fwd_bwd(x: torch.Tensor = x, ref: torch.Tensor = ref) -> None:
            fmp(x, ref).sum().backward()

        act = saved_tensor_bytes(lambda x=x, ref=ref: fmp(x, ref))
        t_f = median_time(fwd, repeats)
        t_fb = median_time(fwd_bwd, repeats)
        vox = n**3
        rows.append(
            {
                "LR grid": f"{n}^3",
                "HR grid": f"{2 * n}^3",
                "fwd ms": t_f * 1e3,
                "fwd+bwd ms": t_fb * 1e3,
                "act MiB": act / 2**20,
                "act B/LR voxel": act / vox,
                "fwd+bwd us/LR voxel": t_fb * 1e6 / vox,
            }
        )
    return rows


def conv_step() -> tuple[Callable[[], None], float]:
    """A bare Conv3d 3x3x3, 32 -> 32 channels, fwd+bwd on 4 x 32 x 24^3 and its FLOPs."""
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.randn(4, 32, 24, 24, 24, requires_grad=True)

    def step() -> None:
        conv.zero_grad(set_to_none=True)
        conv(x).sum().backward()

    return step, _flops(step)


def model_step(name: str) -> tuple[Callable[[], None], float, int]:
    """One training step of ``name`` (tiny, 3D, x2, batch 4, LR 12^3), its FLOPs, params."""
    torch.manual_seed(0)
    model = create_model(name, spatial_dims=3, scale=2, size="tiny")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.rand(4, 1, 12, 12, 12)
    hr = torch.rand(4, 1, 24, 24, 24)
    ref = torch.rand(4, 1, 24, 24, 24)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(model(lr, ref), hr).backward()
        opt.step()

    return step, _flops(step), model.num_parameters()


def _flops(fn: Callable[[], None]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()  # also the warm-up
    return float(counter.get_total_flops())


def step_rows(names: list[str], rounds: int) -> list[dict[str, object]]:
    """Interleaved rounds (bare conv, then every model, ``rounds`` times): median wall and
    CPU time (``time.process_time``: robust to other processes on a shared machine, it
    counts only this process' CPU) per step, and GFLOP/s relative to the bare conv."""
    steps = {"bare Conv3d 32ch": (*conv_step(), 0)}
    for name in names:
        steps[name] = model_step(name)
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for key, (fn, _, _) in steps.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - w0)
            cpu[key].append(time.process_time() - c0)
    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    conv_flops = steps["bare Conv3d 32ch"][1]
    conv_w = conv_flops / med_w["bare Conv3d 32ch"]
    conv_c = conv_flops / med_c["bare Conv3d 32ch"]
    rows = []
    for key, (_, flops, params) in steps.items():
        rows.append(
            {
                "model": key,
                "params": params,
                "GFLOP/step": flops / 1e9,
                "wall ms": med_w[key] * 1e3,
                "cpu ms": med_c[key] * 1e3,
                "GFLOP/s (wall)": flops / med_w[key] / 1e9,
                "vs conv (wall)": flops / med_w[key] / conv_w,
                "vs conv (cpu)": flops / med_c[key] / conv_c,
            }
        )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--models",
        default="crfm,crfm-noref,crfm-nograd,crfm-nofmp,crfm-fmp-xscale,crfm-fmp-xmod,edsr,edsr-fmp",
    )
    parser.add_argument("--skip-fmp", action="store_true", help="only the training steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_fmp:
        sizes = [16, 32] if args.quick else [16, 24, 32, 48]
        print(f"FMP (16 ch, x2, both attentions, shifted), batch 1, {args.threads} threads\n")
        print(table(fmp_rows(sizes, 1 if args.quick else 2)))
        print()
    rows = step_rows(args.models.split(","), 3 if args.quick else 7)
    load = os.getloadavg()[0]
    print(
        f"training step, tiny, 3D x2, batch 4, LR 12^3 -> HR 24^3, Adam, {args.threads} "
        f"threads, median of interleaved rounds, load average {load:.1f} on "
        f"{os.cpu_count()} cores\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
