"""The fair default benchmark's costs (issue 9): training step per model, and what 10+ test
subjects cost to synthesise, degrade and evaluate.

    python benchmarks/fair.py step [--models crfm,minet,...] [--threads 2] [--repeats 5]
    python benchmarks/fair.py eval [--workdir DIR] [--threads 2]

``step``: one training step (forward + backward + Adam) of each model at its configured size
(params.yaml defaults: tiny), batch 4, HR patch 24^3 (LR 12^3 at x2), with its GFLOP per step
(``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls; forward and
backward) and the ratio to a bare 3x3x3 Conv3d fwd+bwd (32 -> 32 channels, 4 x 24^3) timed
in the same run, so a shared machine's noise cancels in the ratio.

``eval``: synthesises the default dataset (params.yaml: 23 subjects), degrades the task's LR
version, and evaluates every default model (untrained weights: inference time does not depend
on them) on the test split with the benchmark's own evaluation path; prints seconds per step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from crfm_bench.config import load_params
from crfm_bench.models import create_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "crfm,minet,crfm-noref,edsr,rcan"


def training_step(name: str, batch: int, hr: int):
    """(model, one-step closure, GFLOP of one step) of ``name`` as params.yaml configures it."""
    params = load_params(ROOT / "params.yaml")
    mcfg = params.model_config_for(name)
    torch.manual_seed(0)
    model = create_model(name, 3, 2, size=mcfg.size, **mcfg.options).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lr = torch.rand(batch, 1, hr // 2, hr // 2, hr // 2)
    ref = torch.rand(batch, 1, hr, hr, hr)
    target = torch.rand(batch, 1, hr, hr, hr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(model(lr, ref), target).backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    return model, step, counter.get_total_flops() / 1e9


def steps(args: argparse.Namespace) -> None:
    """Round robin: each repeat times the bare conv and one step of every model in turn, so
    load changes of a shared machine hit all of them alike; medians are reported."""
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.rand(args.batch, 32, args.patch, args.patch, args.patch, requires_grad=True)

    def conv_step() -> None:
        conv.zero_grad(set_to_none=True)
        conv(x).sum().backward()

    with FlopCounterMode(display=False) as counter:
        conv_step()
    runs = {"bare conv3d": (None, conv_step, counter.get_total_flops() / 1e9)}
    for name in args.models.split(","):
        runs[name] = training_step(name, args.batch, args.patch)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for key, (_, fn, _) in runs.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = runs["bare conv3d"][2] / med["bare conv3d"]
    print(f"bare Conv3d 32->32 fwd+bwd: {med['bare conv3d'] * 1e3:.1f} ms, {rate:.1f} GFLOP/s")
    ref = args.models.split(",")[0]
    print(f"| model | params | step ms | step / {ref} | GFLOP / step | GFLOP/s | % of bare conv |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, (model, _, gflop) in runs.items():
        if model is None:
            continue
        achieved = gflop / med[key]
        print(
            f"| {key} | {model.num_parameters():,} | {med[key] * 1e3:.0f} | "
            f"{med[key] / med[ref]:.2f} | {gflop:.1f} | {achieved:.1f} | {100 * achieved / rate:.0f} |"
        )


def evaluation(args: argparse.Namespace) -> None:
    from crfm_bench.data.synth import synthesize_dataset
    from crfm_bench.degrade.stage import degrade_dataset
    from crfm_bench.engine.data import load_cases
    from crfm_bench.engine.evaluate import evaluate_cases
    from crfm_bench.models.registry import applicable_models

    work = Path(args.workdir or tempfile.mkdtemp(prefix="fair-eval-"))
    params = load_params(ROOT / "params.yaml", [f"paths.data_dir={work / 'data'}"])
    t0 = time.perf_counter()
    synthesize_dataset(params.synth, params.paths.data_dir / "hr", progress=False)
    t1 = time.perf_counter()
    degrade_dataset(params, domain=params.task.domain, scale=params.task.scale, progress=False)
    t2 = time.perf_counter()
    cases = load_cases(params, ("test",))
    t3 = time.perf_counter()
    n = params.synth.n_subjects
    print(
        f"synthesis of {n} subjects: {t1 - t0:.1f} s; degrade ({params.task.domain} "
        f"x{params.task.scale}, every contrast): {t2 - t1:.1f} s; "
        f"loading {len(cases)} test cases: {t3 - t2:.1f} s"
    )
    names, _ = applicable_models(params.benchmark.models, params.task.domain)
    print("| model | test subjects | evaluation s (total) | s / subject |")
    print("|---|---:|---:|---:|")
    for name in names:
        mcfg = params.model_config_for(name)
        torch.manual_seed(0)
        model = create_model(name, 3, 2, size=mcfg.size, **mcfg.options)
        t = time.perf_counter()
        rows = evaluate_cases(model, name, cases, params)
        total = time.perf_counter() - t
        print(f"| {name} | {len(rows)} | {total:.1f} | {total / len(rows):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["step", "eval"])
    parser.add_argument("--models", default=DEFAULT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=24, help="HR patch edge (voxels)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps(args) if args.part == "step" else evaluation(args)


if __name__ == "__main__":
    main()
