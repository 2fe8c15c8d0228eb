"""Training and evaluation at the convolution roofline (not a test; figures are ratios).

    python benchmarks/roofline.py [--quick] [--models crfm,edsr] [--sizes tiny,base]
                                  [--patches 24,64] [--threads 2] [--rounds 3] [--no-levers]
                                  [--no-compile] [--no-inference] [--json PATH]

Everything runs in one process with the same torch threads (default 2), so every rate is
compared with a bare ``Conv3d`` 3x3x3, 32 -> 32 channels, forward + backward, measured
alongside on the same batch and HR patch (the machine's convolution roofline): just before
and just after each model, whose ratio uses the mean of the two. ``--rounds`` (default 3,
1 with ``--quick``) times the whole list again, interleaved; rows give medians and the
range of the ratio. The process keeps its freed memory, as the engine's training and
evaluation processes do (:mod:`crfm_bench.engine.memory`); ``CRFM_BENCH_MALLOC=system``
measures glibc's default instead.

1. **Training step** of every registered learned model (``list_models`` and
   ``create_model``: the models as they are when this runs), 3D x2, batch 4, for each HR
   patch of ``--patches`` (24: the default ``train.patch_size``, LR 12^3; 64: the ``base``
   training patch, LR 32^3). One step is the engine loop's: forward + loss, backward,
   gradient clipping (1.0) and Adam. Patches come from a ``PatchDataset`` (the engine's
   sampler) over an in-memory synthetic volume of the default test shape, through a
   ``DataLoader`` as in training. Adam is the engine's (``crfm_bench.engine.step.ADAM_IMPL``,
   fused), so the step is the one training runs. Each phase (data, forward, backward, optimizer) is timed
   with its own wall clock (on CPU every op is synchronous, so the phases add up to the
   step); medians over the timed steps after two warm-up steps. GFLOP per step come from
   ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward (convolutions and
   matmuls; elementwise ops, FFTs and Adam are not counted). ``GFLOP/s`` = GFLOP / (forward
   + backward + optimizer time); ``% conv`` = that rate / the bare conv's rate.
   ``base`` models are not timed on CPU by default (minutes per step); their FLOPs, aten op
   count and activation bytes at the base patch are counted on the ``meta`` device (no
   arithmetic), for the scale-on-paper estimate (``docs/performance.md``).
2. **Levers outside the models** (tiny models, first patch): the Adam implementation
   (for-loop, the CPU default; ``foreach``; ``fused``) and ``torch.compile`` (inductor): its
   compile time (first steps minus eager steps), per-step time after, and the break-even
   step count against the default run's 1000 steps per model (25 epochs x 40 steps). With
   the engine's fused Adam: the whole model in the other memory layout than the one it runs
   in (``SRModel.channels_last_dims``: channels-last or contiguous), the tail conv alone fed
   channels-last (contiguous models; changes float gradients), and the model with its shifted
   window layers unshifted (what the shift costs). Default models: crfm, edsr, rcan,
   edsr-fmp.
3. **Evaluation cost**: ``sliding_window_sr`` at the default window (48 HR voxels, overlap
   0.25, Gaussian blend) against one forward pass over the whole default test volume (HR
   80x96x84, LR 40x48x42 at x2), for edsr and crfm (random weights): the plain path
   (``fast=False``: the previous algorithm: 24^3 cubes, 2 per call, weights rebuilt per
   window) and the fast path at each ``--eval-batches`` size (the ``budget`` layout of
   :func:`crfm_bench.engine.inference.plan_windows`). Wall time: the minimum of the
   interleaved repeats (other work only adds time); CPU time: all threads' CPU seconds,
   which a shared machine disturbs far less. Agreement with the full pass as PSNR.
4. **Scale on paper** (with ``base`` in ``--sizes``): from the meta-counted base steps,
   DDP efficiency over 2, 4, 8 GPU nodes at 25 and 100 Gb/s and the batch that fills one
   GPU; an estimate under the assumptions written next to :data:`GPUS`.

The machine may be shared: compare ratios within one run, not seconds across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from crfm_bench.engine.data import Case, PatchDataset
from crfm_bench.engine.memory import reuse_freed_memory
from crfm_bench.engine.step import ADAM_IMPL
from crfm_bench.models import create_model, list_models, model_info

SCALE = (2, 2, 2)
TEST_HR_SHAPE = (80, 96, 84)  # the default synthetic test volume (2 mm)
BATCH = 4
GRAD_CLIP = 1.0
STEPS_PER_RUN = 25 * 40  # default train.epochs x train.steps_per_epoch


# ---------------------------------------------------------------- data
def synthetic_case(hr_shape: tuple[int, ...] = TEST_HR_SHAPE, seed: int = 0) -> Case:
    """An in-memory case: a smooth ellipsoidal 'brain' with texture, its 2x average-pooled LR
    and a second contrast as the HR reference (intensities roughly in [0, 1])."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in hr_shape], indexing="ij")
    r = sum((g / 0.8) ** 2 for g in grids)
    noise = torch.from_numpy(rng.standard_normal(hr_shape).astype(np.float32))[None, None]
    smooth = torch.nn.functional.avg_pool3d(noise, 5, 1, 2)[0, 0].numpy()
    hr = ((r < 1) * (0.6 + 0.3 * np.tanh(3 * smooth))).astype(np.float32)
    ref = ((r < 1) * (0.8 - 0.3 * np.tanh(3 * smooth))).astype(np.float32)
    lr = torch.nn.functional.avg_pool3d(torch.from_numpy(hr)[None, None], SCALE)[0, 0].numpy()
    eye = np.eye(4)
    return Case("synthetic", "train", lr, hr, ref, 1.0, eye, eye, "", "")


def loader(case: Case, patch: int, batch: int, length: int) -> torch.utils.data.DataLoader:
    dataset = PatchDataset([case], SCALE, patch, length=length * batch, seed=0)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, drop_last=True)


# ---------------------------------------------------------------- training step
def make_optimizer(model: torch.nn.Module, impl: str) -> torch.optim.Optimizer:
    kwargs = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(impl, {})
    if impl == "loop":
        kwargs = {"foreach": False}
    return torch.optim.Adam(model.parameters(), lr=1e-3, **kwargs)


def step_flops(model: torch.nn.Module, lr: torch.Tensor, ref: torch.Tensor, hr: torch.Tensor):
    """(FLOPs, aten ops) of one forward + loss + backward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            OpCounter.n += 1
            return func(*args, **(kwargs or {}))

    with FlopCounterMode(display=False) as counter, OpCounter():
        sr = model(lr, ref if model.needs_reference else None)
        model.loss(sr.float(), hr).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops(), OpCounter.n


def meta_footprint(name: str, size: str, patch: int, batch: int) -> dict[str, Any]:
    """FLOPs, aten ops and saved-activation bytes of one training step on the meta device."""
    with torch.device("meta"):
        model = create_model(name, 3, SCALE, size=size)
        lr = torch.empty(batch, 1, *(patch // s for s in SCALE))
        ref = torch.empty(batch, 1, patch, patch, patch)
        hr = torch.empty_like(ref)
    storages: dict[int, int] = {}
    keep: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st._cdata] = max(storages.get(st._cdata, 0), st.nbytes())
        keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        flops, ops = step_flops(model, lr, ref, hr)
    params = model.num_parameters()
    act = sum(storages.values()) - 4 * params  # weights saved once; count activations only
    return {"flops": flops, "aten_ops": ops, "params": params, "act_bytes": max(act, 0)}


def time_training(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batches: list[dict[str, torch.Tensor]] | torch.utils.data.DataLoader,
    steps: int,
    warmup: int = 2,
    channels_last: bool = False,
) -> dict[str, float]:
    """Median seconds per phase (data, forward, backward, optimizer) over ``steps`` steps."""
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    phases: dict[str, list[float]] = {k: [] for k in ("data", "forward", "backward", "optimizer")}
    cpu: list[float] = []
    it = iter(batches)
    model.train()
    for i in range(warmup + steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        b = next(it)
        lr = b["lr"].contiguous(memory_format=fmt)
        ref = b["ref"].contiguous(memory_format=fmt) if model.needs_reference else None
        hr = b["hr"]
        t1 = time.perf_counter()
        loss = model.loss(model(lr, ref).float(), hr)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        t4 = time.perf_counter()
        if i >= warmup:
            cpu.append(time.process_time() - c0)
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[k].append(v)
    out = {k: statistics.median(v) for k, v in phases.items()}
    out["step"] = out["forward"] + out["backward"] + out["optimizer"]
    out["step_cpu"] = statistics.median(cpu)  # all threads' CPU seconds, data included
    return out


def conv_roofline(patch: int, batch: int, repeats: int) -> dict[str, float]:
    """Bare Conv3d 3x3x3, 32 -> 32 channels, fwd + bwd (input and weight gradients)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.randn(batch, 32, patch, patch, patch, requires_grad=True)

    def run() -> None:
        conv.zero_grad(set_to_none=True)
        x.grad = None
        conv(x).sum().backward()

    with FlopCounterMode(display=False) as counter:
        run()
    times, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec = statistics.median(times)
    flops = counter.get_total_flops()
    return {
        "seconds": sec,
        "gflop": flops / 1e9,
        "gflops_per_s": flops / 1e9 / sec,
        "gflops_per_cpu_s": flops / 1e9 / statistics.median(cpu),
    }


def bench_training(
    names: list[str], patch: int, batch: int, steps: int, case: Case, rounds: int = 1
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every model's training step, each bracketed by the bare conv measured just before and
    just after it (the mean of the two is that model's roofline: the machine's speed drifts
    over a run, by up to 20 % on a shared VM). With ``rounds`` > 1 the whole list is timed
    again, interleaved, and each row gives the median and the range over the rounds.
    Returns the rows and the mean of all conv measurements."""
    models = {}
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, 3, SCALE)
        opt = make_optimizer(model, ADAM_IMPL)  # the engine's Adam, as training runs it
        first = next(iter(loader(case, patch, batch, 1)))
        models[name] = (model, opt, step_flops(model, first["lr"], first["ref"], first["hr"]))
    convs = [conv_roofline(patch, batch, repeats=steps)]
    timed: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            model, opt, (flops, _) = models[name]
            t = time_training(model, opt, loader(case, patch, batch, steps + 3), steps)
            convs.append(conv_roofline(patch, batch, repeats=steps))
            roof = {k: (convs[-2][k] + convs[-1][k]) / 2 for k in convs[-1]}
            t["frac_conv"] = flops / 1e9 / t["step"] / roof["gflops_per_s"]
            t["frac_conv_cpu"] = flops / 1e9 / t["step_cpu"] / roof["gflops_per_cpu_s"]
            timed[name].append(t)
            print(f"  trained {name} at HR {patch}^3: {1e3 * t['step']:.0f} ms/step", flush=True)
    rows = []
    for name in names:
        model, _, (flops, ops) = models[name]
        ts = timed[name]

        def med(key: str, ts: list[dict[str, float]] = ts) -> float:
            return statistics.median(t[key] for t in ts)

        rows.append(
            {
                "model": name,
                "patch": patch,
                "batch": batch,
                "params": model.num_parameters(),
                "step_ms": 1e3 * med("step"),
                "data_ms": 1e3 * med("data"),
                "forward_ms": 1e3 * med("forward"),
                "backward_ms": 1e3 * med("backward"),
                "optimizer_ms": 1e3 * med("optimizer"),
                "gflop": flops / 1e9,
                "aten_ops": ops,
                "gflops_per_s": flops / 1e9 / med("step"),
                "gflops_per_cpu_s": flops / 1e9 / med("step_cpu"),
                "frac_conv": med("frac_conv"),
                "frac_conv_cpu": med("frac_conv_cpu"),
                "frac_conv_range": [
                    min(t["frac_conv"] for t in ts),
                    max(t["frac_conv"] for t in ts),
                ],
                "rounds": len(ts),
            }
        )
    conv = {k: statistics.mean(c[k] for c in convs) for k in convs[0]}
    conv["gflops_per_s_range"] = [
        min(c["gflops_per_s"] for c in convs),
        max(c["gflops_per_s"] for c in convs),
    ]
    return rows, conv


# ---------------------------------------------------------------- levers
class ChannelsLastInput(torch.nn.Module):
    """A conv fed a channels-last copy of its input, its output made contiguous again (the
    tail-conv lever: the forward is equal to the bit on this machine, the gradients are not)."""

    def __init__(self, conv: torch.nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.contiguous(memory_format=torch.channels_last_3d)).contiguous()


def bench_levers(
    names: list[str], patch: int, batch: int, steps: int, case: Case, compile_: bool
) -> list[dict[str, Any]]:
    """Per model: eager step with each Adam, torch.compile (all same batches); with the
    engine's fused Adam: the whole model in the other memory layout than the one it runs in
    (``SRModel.channels_last_dims``), the tail conv alone fed channels-last (contiguous models
    with a 3D ``tail`` conv), and every shifted window layer unshifted (models with one: the
    shift's cost; not a model anyone trains)."""
    rows = []
    for name in names:
        data = list(loader(case, patch, batch, steps + 4))
        torch.manual_seed(0)
        base_model = create_model(name, 3, SCALE)
        row: dict[str, Any] = {"model": name}
        for impl in ("loop", "foreach", "fused"):
            model = copy.deepcopy(base_model)
            t = time_training(model, make_optimizer(model, impl), data, steps)
            row[f"adam_{impl}_ms"] = 1e3 * t["step"]
            row[f"adam_{impl}_opt_ms"] = 1e3 * t["optimizer"]
            row[f"adam_{impl}_cpu_ms"] = 1e3 * t["step_cpu"]
        # the whole model in the other layout than the one it runs in (SRModel.memory_format)
        runs_cl = base_model.memory_format() == torch.channels_last_3d
        row["layout"] = "channels-last" if runs_cl else "contiguous"
        other = torch.contiguous_format if runs_cl else torch.channels_last_3d
        model = copy.deepcopy(base_model).to(memory_format=other)
        t = time_training(
            model, make_optimizer(model, "fused"), data, steps, channels_last=not runs_cl
        )
        row["other_layout_ms"] = 1e3 * t["step"]
        row["other_layout_cpu_ms"] = 1e3 * t["step_cpu"]
        if not runs_cl and isinstance(getattr(base_model, "tail", None), torch.nn.Conv3d):
            model = copy.deepcopy(base_model)
            model.tail = ChannelsLastInput(model.tail)
            t = time_training(model, make_optimizer(model, "fused"), data, steps)
            row["tail_channels_last_ms"] = 1e3 * t["step"]
        if any(getattr(m, "shift", False) is True for m in base_model.modules()):
            model = copy.deepcopy(base_model)
            for m in model.modules():
                if getattr(m, "shift", False) is True:
                    m.shift = False
            t = time_training(model, make_optimizer(model, "fused"), data, steps)
            row["shift_off_ms"] = 1e3 * t["step"]
        if compile_:
            row.update(bench_compile(base_model, data, steps))
        rows.append(row)
        print(f"  levers of {name} measured", flush=True)
    return rows


def bench_compile(base_model: torch.nn.Module, data: list, steps: int) -> dict[str, float]:
    """Compile time and per-step time of ``torch.compile`` (inductor) on the model."""
    import torch._dynamo

    torch._dynamo.reset()
    model = copy.deepcopy(base_model)
    opt = make_optimizer(model, "loop")
    compiled = torch.compile(model)
    compiled.loss = model.loss
    compiled.needs_reference = model.needs_reference
    t0 = time.perf_counter()
    try:
        time_training(compiled, opt, data, steps=1, warmup=1)  # compiles forward and backward
    except Exception as exc:  # report, do not hide: the lever does not apply to this model
        return {"compile_error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    first_two = time.perf_counter() - t0
    t = time_training(compiled, opt, data, steps, warmup=0)
    eager = time_training(model, opt, data, steps, warmup=1)
    compile_s = first_two - 2 * t["step"] - 2 * t["data"]
    gain = eager["step"] - t["step"]
    return {
        "compile_s": compile_s,
        "compiled_ms": 1e3 * t["step"],
        "eager_ms": 1e3 * eager["step"],
        "break_even_steps": compile_s / gain if gain > 0 else math.inf,
        "saved_per_run_s": gain * STEPS_PER_RUN - compile_s,
    }


# ---------------------------------------------------------------- inference
def bench_inference(
    names: list[str],
    case: Case,
    window: int,
    overlap: float,
    batches: list[int],
    repeats: int,
) -> list[dict[str, Any]]:
    """Sliding window (plain path: the previous algorithm, batch 2; fast path at each batch
    size of ``batches``) against one full-volume forward pass; minimum wall time and median
    CPU time (all threads) over ``repeats`` interleaved runs."""
    from crfm_bench.engine.inference import plan_windows, sliding_window_sr

    rows = []
    volume = math.prod(case.lr.shape)
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, 3, SCALE).eval()
        ref = case.ref if model.needs_reference else None
        lr_t = torch.from_numpy(case.lr)[None, None]
        ref_t = None if ref is None else torch.from_numpy(ref)[None, None]

        def full(model=model, lr_t=lr_t, ref_t=ref_t) -> np.ndarray:
            with torch.inference_mode():
                return model(lr_t, ref_t)[0, 0].numpy()

        paths = {"full": full}
        paths["plain b2"] = lambda m=model, r=ref: sliding_window_sr(
            m, case.lr, r, SCALE, window, overlap, batch_size=2, fast=False
        )
        for b in batches:
            paths[f"fast b{b}"] = lambda m=model, r=ref, b=b: sliding_window_sr(
                m, case.lr, r, SCALE, window, overlap, batch_size=b
            )
        wall: dict[str, list[float]] = {k: [] for k in paths}
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        outs: dict[str, np.ndarray] = {}
        full()  # warm-up
        for _ in range(repeats):  # interleaved, so drifting load biases no path
            for key, fn in paths.items():
                c0 = time.process_time()
                t0 = time.perf_counter()
                outs[key] = fn()
                wall[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
        w_full, c_full = min(wall["full"]), statistics.median(cpu["full"])
        for key in paths:
            if key == "full":
                continue
            mse = float(np.mean((np.clip(outs[key], 0, 1) - np.clip(outs["full"], 0, 1)) ** 2))
            b = int(key.split("b")[-1])
            plan = plan_windows(
                case.lr.shape,
                SCALE,
                window,
                overlap,
                b,
                "fixed" if key.startswith("plain") else "budget",
            )
            rows.append(
                {
                    "model": name,
                    "path": key,
                    "full_s": w_full,
                    "sliding_s": min(wall[key]),
                    "ratio": min(wall[key]) / w_full,
                    "ratio_cpu": statistics.median(cpu[key]) / c_full,
                    "voxels": plan.voxels / volume,
                    "calls": math.ceil(len(plan.corners) / plan.per_call),
                    "window": "x".join(map(str, plan.window)),
                    "psnr_vs_full_db": 10 * math.log10(1.0 / max(mse, 1e-15)),
                }
            )
        print(f"  inference of {name} measured", flush=True)
    return rows


# ---------------------------------------------------------------- scale on paper
# Assumptions of the estimate (stated in docs/performance.md): dense bf16 peaks from the
# vendors' data sheets, a utilisation factor for 3D convolution nets under autocast, the
# eager per-op launch cost, DDP's ring allreduce of fp32 gradients in 25 MB buckets.
GPUS = {"A100": 312e12, "H100": 989e12}  # bf16 dense FLOP/s (SXM data sheets)
UTILISATION = 0.4
LAUNCH_S = 10e-6  # host time per aten op in eager mode (dispatch + kernel launch)
ALPHA_S = 10e-6  # latency per ring step and bucket
BUCKET_BYTES = 25 * 2**20
BWD_SHARE = 2 / 3  # backward's share of a step's FLOPs (2 of forward's 1 + backward's 2)


def allreduce_seconds(nbytes: float, nodes: int, gbit_s: float) -> float:
    """Ring allreduce: 2 (N-1)/N x bytes / bandwidth, plus 2 (N-1) latencies per bucket."""
    buckets = math.ceil(nbytes / BUCKET_BYTES)
    steps = 2 * (nodes - 1)
    return steps / nodes * nbytes / (gbit_s * 1e9 / 8) + steps * buckets * ALPHA_S


def paper_estimates(base_rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """DDP efficiency over N nodes and GPU-filling sizes, from meta-counted base steps."""
    scaling, sizing = [], []
    for r in (r for r in base_rows if r["batch"] == 1):
        grad_bytes = 4 * r["params"]
        flop_per_sample = r["gflop"] * 1e9  # at HR 64^3
        for gpu, peak in GPUS.items():
            for batch in (1, 4):
                t_comp = batch * flop_per_sample / (UTILISATION * peak)
                row = {
                    "model": r["model"],
                    "gpu": gpu,
                    "batch": batch,
                    "grad_mb": grad_bytes / 1e6,
                    "tflop_step": batch * flop_per_sample / 1e12,
                    "t_comp_ms": 1e3 * t_comp,
                }
                for n in (2, 4, 8):
                    for bw in (25, 100):
                        t_comm = allreduce_seconds(grad_bytes, n, bw)
                        hidden = max(0.0, t_comm - BWD_SHARE * t_comp)
                        row[f"eff_{n}_{bw}"] = t_comp / (t_comp + t_comm)
                        row[f"effov_{n}_{bw}"] = t_comp / (t_comp + hidden)
                scaling.append(row)
            launch = r["aten_ops"] * LAUNCH_S
            act = r["act_gib"] * 2**30  # fp32 activations per sample at 64^3
            for patch in (64, 96, 128):
                v = (patch / 64) ** 3
                per_sample = flop_per_sample * v / (UTILISATION * peak)
                b_min = max(1, math.ceil(launch / per_sample))
                b_max = int((80e9 - 16 * r["params"]) // (act * v))
                sizing.append(
                    {
                        "model": r["model"],
                        "gpu": gpu,
                        "patch": patch,
                        "launch_ms": 1e3 * launch,
                        "sample_ms": 1e3 * per_sample,
                        "b_min": b_min,
                        "b_max_fp32": b_max,
                    }
                )
    return {"scaling": scaling, "sizing": sizing}


# ---------------------------------------------------------------- report
def table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns.values()) + " |"]
    lines.append("|" + "|".join("---" if k == "model" else "---:" for k in columns) + "|")
    for r in rows:
        cells = []
        for k in columns:
            v = r.get(k, "-")
            if isinstance(v, float):
                digits = 2 if abs(v) < 10 else 1 if abs(v) < 1000 else 0
                v = "inf" if math.isinf(v) else f"{v:.{digits}f}"
            elif isinstance(v, int) and k == "params":
                v = f"{v:,}"
            elif isinstance(v, list):  # a (min, max) range
                v = "-".join(f"{x:.2f}" for x in v)
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [
        f"# Roofline ({m['cpu_count']} cores, {m['threads']} torch threads, torch "
        f"{m['torch']}, malloc {m.get('malloc', 'system')}, load {m['load_start']:.1f} -> "
        f"{m['load_end']:.1f}; shared machine: compare ratios)\n"
    ]
    for patch, block in res["training"].items():
        roof = block["conv"]
        out.append(
            f"## Training step, tiny, 3D x2, batch {block['batch']}, HR patch {patch}^3 "
            f"(bare Conv3d 32ch fwd+bwd: {roof['gflops_per_s']:.1f} GFLOP/s wall, "
            f"{roof['gflops_per_cpu_s']:.1f} per CPU second; measured before and after each "
            f"model, {roof['gflops_per_s_range'][0]:.1f}-{roof['gflops_per_s_range'][1]:.1f}; "
            f"medians over {block['rows'][0]['rounds']} interleaved rounds)\n"
        )
        cols = {
            "model": "model",
            "params": "params",
            "step_ms": "ms/step",
            "gflop": "GFLOP/step",
            "gflops_per_s": "GFLOP/s",
            "frac_conv": "x bare conv",
            "frac_conv_range": "x bare conv, range",
            "frac_conv_cpu": "x bare conv (CPU s)",
            "data_ms": "data ms",
            "forward_ms": "fwd ms",
            "backward_ms": "bwd ms",
            "optimizer_ms": "opt ms",
            "aten_ops": "aten ops",
        }
        out.append(table(block["rows"], cols) + "\n")
    if res.get("base"):
        out.append("## base models, one training step counted on the meta device (not timed)\n")
        cols = {
            "model": "model",
            "patch": "HR patch",
            "batch": "batch",
            "params": "params",
            "gflop": "GFLOP/step",
            "aten_ops": "aten ops",
            "act_gib": "saved act. GiB",
        }
        out.append(table(res["base"], cols) + "\n")
    if res.get("paper"):
        out.append(
            "## Scale on paper (ESTIMATE from meta-counted base-size FLOPs and parameter bytes; "
            f"bf16 peak x {UTILISATION} utilisation; ring allreduce of fp32 gradients)\n"
        )
        cols = {
            "model": "model",
            "gpu": "GPU",
            "batch": "batch/GPU",
            "grad_mb": "allreduce MB",
            "tflop_step": "TFLOP/step",
            "t_comp_ms": "compute ms",
        }
        for n in (2, 4, 8):
            for bw in (25, 100):
                cols[f"effov_{n}_{bw}"] = f"N={n} {bw}G"
        out.append("Efficiency with the allreduce overlapped with backward:\n")
        out.append(table(res["paper"]["scaling"], cols) + "\n")
        for n in (2, 4, 8):
            for bw in (25, 100):
                cols.pop(f"effov_{n}_{bw}")
                cols[f"eff_{n}_{bw}"] = f"N={n} {bw}G"
        out.append("Efficiency without overlap (allreduce after backward):\n")
        out.append(table(res["paper"]["scaling"], cols) + "\n")
        cols = {
            "model": "model",
            "gpu": "GPU",
            "patch": "HR patch",
            "launch_ms": "launch ms/step",
            "sample_ms": "compute ms/sample",
            "b_min": "batch to hide launches",
            "b_max_fp32": "max batch (80 GB, fp32 act.)",
        }
        out.append(table(res["paper"]["sizing"], cols) + "\n")
    if res.get("levers"):
        out.append("## Levers outside the models (tiny, ms per step, lower is better)\n")
        cols = {
            "model": "model",
            "adam_loop_ms": "Adam for-loop (default)",
            "adam_foreach_ms": "Adam foreach",
            "adam_fused_ms": "Adam fused",
            "adam_loop_opt_ms": "opt ms loop",
            "adam_fused_opt_ms": "opt ms fused",
            "adam_foreach_opt_ms": "opt ms foreach",
            "layout": "runs in",
            "other_layout_ms": "other layout (fused)",
            "tail_channels_last_ms": "tail conv channels-last (fused)",
            "shift_off_ms": "shift off (fused)",
            "adam_loop_cpu_ms": "CPU ms loop",
            "other_layout_cpu_ms": "CPU ms other layout",
            "eager_ms": "eager (compile run)",
            "compiled_ms": "compiled",
            "compile_s": "compile s",
            "break_even_steps": "break-even steps",
            "saved_per_run_s": f"s saved per {STEPS_PER_RUN}-step run",
            "compile_error": "compile error",
        }
        out.append(table(res["levers"], cols) + "\n")
    if res.get("inference"):
        s = res["inference_setting"]
        out.append(
            f"## Sliding window / one full pass (HR {s['hr_shape']}, window {s['window']}, "
            f"overlap {s['overlap']}, gaussian; wall: min of {s['repeats']}, CPU: median)\n"
        )
        cols = {
            "model": "model",
            "path": "path",
            "window": "LR window",
            "calls": "calls",
            "voxels": "LR voxels / volume",
            "full_s": "full pass s",
            "sliding_s": "sliding s",
            "ratio": "sliding / full (wall)",
            "ratio_cpu": "sliding / full (CPU s)",
            "psnr_vs_full_db": "PSNR vs full dB",
        }
        out.append(table(res["inference"], cols) + "\n")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--models", default=None, help="comma list (default: all learned)")
    parser.add_argument("--sizes", default="tiny,base", help="tiny (timed), base (meta count)")
    parser.add_argument("--patches", default="24,64", help="HR training patches, comma list")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timings per model, interleaved (default 3; 1 quick)",
    )
    parser.add_argument("--no-levers", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--eval-batches", default="2,4", help="fast-path batch sizes")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/roofline.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reused = reuse_freed_memory()  # as the engine's training and evaluation processes
    learned = [n for n in list_models() if model_info(n).trainable]
    names = learned if args.models is None else args.models.split(",")
    for n in names:
        model_info(n)  # fails with the known names
    sizes = args.sizes.split(",")
    patches = [int(p) for p in args.patches.split(",")]
    steps = 3 if args.quick else 8
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    res: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_start": os.getloadavg()[0],
            "malloc": "reuse" if reused else "system",
        },
        "training": {},
    }
    case = synthetic_case()
    if "tiny" in sizes:
        for patch in patches:
            rows, roof = bench_training(names, patch, BATCH, steps, case, args.rounds)
            res["training"][str(patch)] = {"batch": BATCH, "conv": roof, "rows": rows}
    if "base" in sizes:
        res["base"] = []
        for name in names:
            for batch in (1, BATCH):
                f = meta_footprint(name, "base", 64, batch)
                res["base"].append(
                    {
                        "model": name,
                        "patch": 64,
                        "batch": batch,
                        "params": f["params"],
                        "gflop": f["flops"] / 1e9,
                        "aten_ops": f["aten_ops"],
                        "act_gib": f["act_bytes"] / 2**30,
                    }
                )
        res["paper"] = paper_estimates(res["base"])
    if not args.no_levers:
        lever_models = names if args.models else ["crfm", "edsr", "rcan", "edsr-fmp"]
        res["levers"] = bench_levers(
            lever_models, patches[0], BATCH, steps, case, not args.no_compile
        )
    if not args.no_inference:
        inf_models = [n for n in ("edsr", "crfm") if args.models is None or n in names]
        repeats = 1 if args.quick else 3
        res["inference_setting"] = {
            "hr_shape": "x".join(map(str, TEST_HR_SHAPE)),
            "window": 48,
            "overlap": 0.25,
            "repeats": repeats,
        }
        batches = [int(b) for b in args.eval_batches.split(",")]
        res["inference"] = bench_inference(inf_models, case, 48, 0.25, batches, repeats)
    res["machine"]["load_end"] = os.getloadavg()[0]
    text = report(res)
    print("\n" + text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(TypeError):
        args.json.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
