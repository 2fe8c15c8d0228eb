"""FMP / windowed-attention benchmark, and CRFM's training-step rate against a bare conv.

    python benchmarks/attention.py [--quick] [--threads 2] [--models crfm,crfm-noref,...]

Part 1: one FMP (tiny width, 16 channels, x2, both attentions, shifted windows) on LR
feature grids of 16^3 to 48^3 (= HR 32^3 to 96^3), batch 1: forward time, forward+backward
time and activation memory (bytes autograd saves for backward, the CPU stand-in for peak
memory, :mod:`crfm_bench.models.footprint`), and the same per voxel to show it is linear.

Part 2: one training step (forward + backward + Adam, batch 4, LR 12^3 -> HR 24^3, scale
x2) of each model against a bare ``Conv3d`` 3x3x3 with 32 channels (fwd+bwd on the LR
batch, 4 x 32 x 24^3) measured in the same run: step time, GFLOP per step
(``torch.utils.flop_counter.FlopCounterMode``) and achieved GFLOP/s as a fraction of the
bare conv's. The machine is shared: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse

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


def bare_conv_rate(repeats: int) -> tuple[float, float]:
    """(GFLOP/s, seconds) of a bare Conv3d 3x3x3, 32 -> 32 channels, fwd+bwd."""
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.randn(4, 32, 24, 24, 24, requires_grad=True)

    def step() -> None:
        conv.zero_grad(set_to_none=True)
        conv(x).sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    t = median_time(step, repeats)
    return counter.get_total_flops() / t / 1e9, t


def step_row(name: str, repeats: int) -> dict[str, object]:
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

    with FlopCounterMode(display=False) as counter:
        step()
    t = median_time(step, repeats)
    flops = counter.get_total_flops()
    return {
        "model": name,
        "params": model.num_parameters(),
        "step ms": t * 1e3,
        "GFLOP": flops / 1e9,
    }


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
    repeats = 3 if args.quick else 5
    if not args.skip_fmp:
        sizes = [16, 32] if args.quick else [16, 24, 32, 40, 48]
        print(f"FMP (16 ch, x2, both attentions, shifted), batch 1, {args.threads} threads\n")
        print(table(fmp_rows(sizes, 1 if args.quick else 3)))
        print()
    conv_before, conv_t = bare_conv_rate(repeats)
    rows = [step_row(n, repeats) for n in args.models.split(",")]
    conv_after, _ = bare_conv_rate(repeats)
    conv = (conv_before + conv_after) / 2
    for row in rows:
        rate = row["GFLOP"] / (row["step ms"] / 1e3)  # type: ignore[operator]
        row["GFLOP/s"] = rate
        row["vs bare conv"] = rate / conv
    print(
        f"training step, tiny, x2, batch 4, LR 12^3 -> HR 24^3, Adam, {args.threads} threads; "
        f"bare Conv3d 3x3x3 32ch fwd+bwd: {conv_before:.1f} / {conv_after:.1f} GFLOP/s "
        f"(before / after the models, {conv_t * 1e3:.1f} ms)\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
