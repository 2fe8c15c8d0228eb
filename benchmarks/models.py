"""Model zoo benchmark: parameters, MACs, CPU time and activation memory per model.

    python benchmarks/models.py [--quick] [--size tiny|base] [--threads N]

For every registered model on a fixed LR patch (2D 32x32 and 3D 16^3, scale x2, batch 1):
trainable parameters, multiply-accumulates of one forward pass (FlopCounterMode FLOPs / 2;
counts convolutions and matmuls, not elementwise ops or FFTs), median forward and
forward+backward wall time, and activation memory (bytes autograd saves for backward, the
CPU stand-in for peak memory; see ``crfm_bench.models.footprint``). Prints a markdown table.
"""

from __future__ import annotations

import argparse

import torch
from timing import median_time
from torch.utils.flop_counter import FlopCounterMode

from crfm_bench.models import create_model, list_models
from crfm_bench.models.footprint import saved_tensor_bytes

PATCHES = {2: (32, 32), 3: (16, 16, 16)}


def measure(name: str, dims: int, size: str, repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = create_model(name, spatial_dims=dims, scale=2, size=size)
    lr = torch.rand(1, 1, *PATCHES[dims])
    ref = torch.rand(1, 1, *(2 * n for n in PATCHES[dims]))
    hr = torch.rand_like(ref)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(lr, ref)  # also the forward warm-up
    macs = counter.get_total_flops() / 2
    act = 0
    if model.trainable:  # training warm-up, counting what autograd saves
        act = saved_tensor_bytes(lambda: model.loss(model(lr, ref), hr).backward())

    def forward() -> None:
        with torch.no_grad():
            model(lr, ref)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.loss(model(lr, ref), hr).backward()

    fwd = median_time(forward, repeats, warmup=False)
    train = median_time(step, repeats, warmup=False) if model.trainable else float("nan")
    return {
        "model": name,
        "dims": dims,
        "params": model.num_parameters(),
        "GMACs": macs / 1e9,
        "fwd ms": fwd * 1e3,
        "fwd+bwd ms": train * 1e3,
        "act MiB": act / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timing repeat instead of 3")
    parser.add_argument("--size", default="tiny", choices=["tiny", "base"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    rows = [measure(n, d, args.size, repeats) for d in (2, 3) for n in list_models()]
    lr2, lr3 = ("x".join(map(str, PATCHES[d])) for d in (2, 3))
    print(
        f"size={args.size}, scale x2, batch 1, LR patch {lr2} (2D) / {lr3} (3D), "
        f"{args.threads} threads, median of {repeats}\n"
    )
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if h not in ("model",) else "---" for h in header) + "|")
    for row in rows:
        cells = []
        for key in header:
            v = row[key]
            if isinstance(v, float):
                cells.append("-" if v != v else f"{v:.3f}" if key == "GMACs" else f"{v:.1f}")
            elif key == "params":
                cells.append(f"{v:,}")
            else:
                cells.append(str(v))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
