"""Benchmark the training engine and full-volume inference (not a test; figures are ratios).

    python benchmarks/engine.py [--quick] [--models edsr,crfm] [--threads N] [--seconds S]
                                [--json PATH]

A small real dataset is synthesised in a temporary folder (``synthesize_dataset``: 6
subjects, T2w target and PDw reference, 3 mm; 4 mm with ``--quick``), degraded
(``degrade_dataset``: k-space, x2) and read with ``load_cases``. Then, for ``edsr`` and
``crfm`` (``build_model``: size tiny; ``--models`` to choose):

1. **Ray Train against the same loop without Ray.** ``fit_model`` (Ray Train V2
   ``TorchTrainer``, 1 worker with ``--threads`` CPUs, the loop of
   :mod:`crfm_bench.engine.loop` in a ``TrainSession``: per-epoch validation, report and
   checkpoint) against that very loop in a ``LocalSession`` in a fresh process
   (``multiprocessing`` spawn): the same model and seed, the same ``PatchDataset`` patches,
   batch size, number of steps, learning-rate schedule, gradient clipping, per-epoch
   validation and torch threads, no checkpoint written. Four epochs, with the step count calibrated so that the plain training
   takes about ``--seconds`` (default 40 s; 2 to 200 steps per epoch), batch 4, 32^3 HR
   patches, 2 validation patches; ``--quick``: 2 epochs of 2 steps on 16^3 patches, batch
   2 (a smoke run, not a measurement). Reported:

   - steps/s of the plain training and of the Ray epochs (the loop's ``epoch_seconds``)
     and their ratio: what Ray costs per step; the same ratio from the fastest epoch of
     each side, robust to a burst of other work;
   - ``fit`` wall time (worker start-up, object store, reports, checkpoints, shutdown)
     against the plain loop (training + validation): ``fit wall / plain loop - 1`` is what
     Ray costs per run (target < 10 % for a run of a minute or more), and
     ``fit wall - Ray epochs - (plain loop - plain training)`` is Ray's fixed cost per run,
     which a longer run amortises;
   - CPU seconds of the training process from the loop's start to its end
     (``time.process_time`` in the plain process; the Ray worker's, polled with psutil
     from the pid the loop writes): far less sensitive than wall time to other work on a
     shared machine;
   - the last epoch's training loss of both: equal when the work is the same.

   The order plain/Ray alternates between models so that drifting load biases neither side.
2. **Sliding window against one forward pass.** ``sliding_window_sr`` (window 48 HR
   voxels, overlap 0.25, Gaussian blend, batch 2; window 32 with ``--quick``) against one
   forward pass over a whole test volume (the synthetic HR grid), one timed run each after
   a warm-up pass; the ratio, the LR voxels the windows feed the model relative to the
   volume's (the overlap's extra work), the number of model calls and the peak input bytes
   per call (LR window batch + HR reference batch, as recorded at the model's input), and
   the PSNR of the sliding result against the single pass (data range 1 after the
   loader's normalisation; a random-weight model, so only agreement is measured).

3. **Adam implementations.** ms per ``train_step`` (and per optimiser ``step()`` alone) with
   a fused, a foreach and a single-tensor Adam on the same batches, interleaved; ratios to
   foreach. ``crfm_bench.engine.step.ADAM_IMPL`` keeps the faster one.

Machine facts (cores, torch threads, load average at start and end) are printed with the
tables; the machine may be shared, so compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crfm_bench.config import Params, load_params
from crfm_bench.engine.build import build_model
from crfm_bench.engine.data import Case, PatchDataset, load_cases
from crfm_bench.engine.loop import train_loop
from crfm_bench.engine.session import LocalSession
from crfm_bench.engine.step import make_optimizer, train_step

MODELS = ("edsr", "crfm")
QUICK_STEPS = 2  # steps per epoch of a --quick run


def make_params(root: Path, quick: bool, threads: int, epochs: int, val_patches: int) -> Params:
    """Benchmark settings: a small synthetic dataset and Ray paths under ``root``."""
    overrides = [
        f"paths.data_dir={root / 'data'}",
        f"paths.runs_dir={root / 'runs'}",
        f"paths.reports_dir={root / 'reports'}",
        "synth.n_subjects=6",
        "synth.n_val=1",
        "synth.n_test=1",
        "synth.contrasts=[T2w, PDw]",
        f"synth.spacing_mm={4.0 if quick else 3.0}",
        "degrade.domains=[kspace]",
        "degrade.scales=[2]",
        "task.target=T2w",
        "task.reference=PDw",
        f"train.epochs={epochs}",
        f"train.patch_size={16 if quick else 32}",
        f"train.batch_size={2 if quick else 4}",
        f"train.val_patches={val_patches}",
        f"train.cpus_per_worker={threads}",
        "train.num_workers=1",
        "train.max_failures=0",
        f"train.num_to_keep={epochs}",  # keeps every epoch's metrics in the Result
        "train.mixed_precision='off'",
        f"ray.num_cpus={max(threads, os.cpu_count() or 1)}",
        f"eval.window={32 if quick else 48}",
        "eval.batch_size=2",  # windows of 2 per call: the comparison needs several calls
    ]
    return load_params(None, overrides)


def make_data(params: Params) -> dict[str, list[Case]]:
    """Synthesise, degrade and load the dataset; cases per split."""
    from crfm_bench.data.synth import synthesize_dataset
    from crfm_bench.degrade.stage import degrade_dataset

    synthesize_dataset(params.synth, params.paths.data_dir / "hr")
    degrade_dataset(params, domain="kspace", scale=params.task.scale, progress=False)
    return {s: load_cases(params, (s,)) for s in ("train", "val", "test")}


def _batches(params: Params, cases: list[Case], steps: int, epoch: int):
    t = params.train
    dataset = PatchDataset(
        cases,
        params.task.factors,
        t.patch_size,
        length=steps * t.batch_size,
        seed=t.seed,
        foreground_fraction=t.foreground_fraction,
    )
    dataset.set_epoch(epoch)
    return torch.utils.data.DataLoader(
        dataset, batch_size=t.batch_size, shuffle=False, drop_last=True
    )


def plain_fit(
    params_dict: dict, name: str, train: list[Case], val: list[Case], steps: int
) -> dict[str, Any]:
    """The engine's own loop (:func:`~crfm_bench.engine.loop.train_loop`) in a
    :class:`~crfm_bench.engine.session.LocalSession`: the same work as the Ray worker, without
    Ray and without writing checkpoints. ``steps`` per epoch, ``params.train.epochs`` epochs;
    returns seconds and losses."""
    t_loop = time.perf_counter()
    cpu_loop = time.process_time()
    params = Params.model_validate(params_dict)
    params.train.steps_per_epoch = steps
    session = LocalSession()
    train_loop(
        {"params": params.model_dump(mode="json"), "model": name, "cases": (train, val)}, session
    )
    reports = session.reports
    return {
        "steps": int(reports[-1]["step"]),
        "train_seconds": sum(r["epoch_seconds"] for r in reports),
        "epoch_seconds": [r["epoch_seconds"] for r in reports],
        "loop_seconds": time.perf_counter() - t_loop,
        "loop_cpu_seconds": time.process_time() - cpu_loop,
        "train_loss": float(reports[-1]["train_loss"]),
        "val_psnr": float(reports[-1]["val_psnr"]),
        "threads": torch.get_num_threads(),
    }


def _plain_child(queue, *args) -> None:
    try:
        queue.put(plain_fit(*args))
    except BaseException as exc:  # report any failure to the parent instead of hanging it
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def plain_fit_in_process(
    params: Params, name: str, train: list[Case], val: list[Case], steps: int
) -> dict[str, Any]:
    """:func:`plain_fit` in a fresh spawned process (cold start like a Ray worker)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    t0 = time.perf_counter()
    proc = ctx.Process(
        target=_plain_child, args=(queue, params.model_dump(mode="json"), name, train, val, steps)
    )
    proc.start()
    out = queue.get()
    wall = time.perf_counter() - t0
    proc.join()
    if "error" in out:
        raise RuntimeError(f"plain loop ({name}) failed: {out['error']}")
    return {**out, "wall_seconds": wall}


def calibrate_steps(
    params: Params, name: str, train: list[Case], target_seconds: float, max_steps: int
) -> int:
    """Steps per epoch (2 to ``max_steps``) so that plain training lasts about ``target_seconds``.

    One warm-up step, then steps (:func:`~crfm_bench.engine.step.train_step`) are timed until
    2 are done and 1 s has passed (at most 20), so a single slow or fast step on a shared
    machine does not decide the count.
    """
    t = params.train
    torch.manual_seed(t.seed)
    model = build_model(params, name).train()
    opt = make_optimizer(model.parameters(), t.lr)
    batches = list(_batches(params, train, 21, epoch=1000))
    train_step(model, opt, batches[0], t.lr, t.grad_clip)  # warm-up
    t0 = time.perf_counter()
    n = 0
    for batch in batches[1:]:
        train_step(model, opt, batch, t.lr, t.grad_clip)
        n += 1
        if n >= 2 and time.perf_counter() - t0 >= 1.0:
            break
    per_step = (time.perf_counter() - t0) / n
    return int(np.clip(math.ceil(target_seconds / (t.epochs * per_step)), 2, max_steps))


def bench_optimizers(
    params: Params, name: str, train: list[Case], rounds: int = 5, steps: int = 4
) -> dict[str, Any]:
    """ms per :func:`~crfm_bench.engine.step.train_step` with each Adam implementation
    (``fused``, ``foreach``, ``single``), interleaved in ``rounds`` so drifting load biases
    none; the median per implementation and the ratios to ``foreach``. Also the ms of the
    optimiser's ``step()`` alone (the part the implementation changes)."""
    t = params.train
    batches = list(_batches(params, train, steps, epoch=2000))
    impls = ("fused", "foreach", "single")
    setups = {}
    for impl in impls:
        torch.manual_seed(t.seed)
        model = build_model(params, name).train()
        opt = make_optimizer(model.parameters(), t.lr, impl=impl)
        train_step(model, opt, batches[0], t.lr, t.grad_clip)  # warm-up
        setups[impl] = (model, opt)
    step_ms: dict[str, list[float]] = {i: [] for i in impls}
    opt_ms: dict[str, list[float]] = {i: [] for i in impls}
    for r in range(rounds):
        for impl in impls if r % 2 == 0 else reversed(impls):
            model, opt = setups[impl]
            t0 = time.perf_counter()
            for batch in batches:
                train_step(model, opt, batch, t.lr, t.grad_clip)
            step_ms[impl].append((time.perf_counter() - t0) * 1000 / len(batches))
            t0 = time.perf_counter()
            for _ in range(20):
                opt.step()  # gradients of the last step are still there
            opt_ms[impl].append((time.perf_counter() - t0) * 1000 / 20)
    med = {i: float(np.median(step_ms[i])) for i in impls}
    med_opt = {i: float(np.median(opt_ms[i])) for i in impls}
    return {
        "params": int(sum(p.numel() for p in setups["fused"][0].parameters())),
        "step_ms": med,
        "optimizer_step_ms": med_opt,
        "step_ratio_to_foreach": {i: med[i] / med["foreach"] for i in impls},
        "optimizer_ratio_to_foreach": {i: med_opt[i] / med_opt["foreach"] for i in impls},
    }


class WorkerCpu:
    """CPU seconds (user + system) of the Ray Train worker from its loop's start to its end.

    Polls the pid the loop writes to ``pid_dir/rank0.pid`` on start; the last sample is at
    most ``interval`` before the worker ends.
    """

    def __init__(self, pid_dir: Path, interval: float = 0.1) -> None:
        self.pid_file = pid_dir / "rank0.pid"
        self.interval = interval
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psutil

        proc = None
        while not self._stop.is_set():
            try:
                if proc is None and self.pid_file.is_file():
                    proc = psutil.Process(int(self.pid_file.read_text()))
                if proc is not None:
                    c = proc.cpu_times()
                    self.last = c.user + c.system
                    if self.first is None:
                        self.first = self.last
            except (psutil.Error, ValueError):
                if proc is not None:
                    return  # the worker has ended
            self._stop.wait(self.interval)

    def __enter__(self) -> WorkerCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return float("nan") if self.first is None else self.last - self.first


def ray_fit(params: Params, name: str, cases_ref, steps: int) -> dict[str, Any]:
    """``fit_model`` with ``steps`` per epoch; wall time, the loop's epoch times, worker CPU."""
    from crfm_bench.engine.trainer import fit_model

    params = params.model_copy(deep=True)
    params.train.steps_per_epoch = steps
    run_name = f"bench-{name}-{time.time_ns()}"
    pid_dir = params.paths.runs_dir / "pids" / run_name
    t0 = time.perf_counter()
    with WorkerCpu(pid_dir) as cpu:
        result = fit_model(params, name, cases_ref, run_name, pid_dir=pid_dir)
    wall = time.perf_counter() - t0
    if result.error is not None or result.metrics_dataframe is None:
        raise RuntimeError(f"Ray fit of {name} failed: {result.error}")
    df = result.metrics_dataframe.sort_values("epoch")
    if len(df) != params.train.epochs:
        raise RuntimeError(f"Ray fit of {name}: {len(df)} epoch reports, not {params.train.epochs}")
    return {
        "steps": int(result.metrics["step"]),
        "train_seconds": float(df["epoch_seconds"].sum()),
        "epoch_seconds": [float(v) for v in df["epoch_seconds"]],
        "wall_seconds": wall,
        "loop_cpu_seconds": cpu.seconds,
        "train_loss": float(result.metrics["train_loss"]),
        "val_psnr": float(result.metrics["val_psnr"]),
    }


class InputRecorder(torch.nn.Module):
    """Wraps a model; counts calls and the largest input (LR + reference) bytes per call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0
        self.peak_bytes = 0
        self.lr_voxels = 0  # LR voxels fed to the model, all calls

    def forward(self, lr: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        size = lr.numel() * lr.element_size()
        if ref is not None:
            size += ref.numel() * ref.element_size()
        self.calls += 1
        self.peak_bytes = max(self.peak_bytes, size)
        self.lr_voxels += lr.numel()
        return self.model(lr, ref)


def bench_inference(params: Params, name: str, case: Case) -> dict[str, Any]:
    """Sliding window (``params.eval``) against one forward pass on ``case``'s whole volume.

    One full pass as a warm-up, then one timed run of each (calls of seconds: the primitive
    set-up of the window shape, paid by the sliding run's first call, is negligible).
    """
    from crfm_bench.engine.inference import sliding_window_sr

    ev = params.eval
    scale = params.task.factors
    torch.manual_seed(0)
    model = build_model(params, name).eval()
    ref = case.ref if model.needs_reference else None
    lr_t = torch.from_numpy(case.lr)[None, None]
    ref_t = None if ref is None else torch.from_numpy(ref)[None, None]

    full_rec = InputRecorder(model)

    def full() -> np.ndarray:
        with torch.no_grad():
            return full_rec(lr_t, ref_t)[0, 0].numpy()

    slide_rec = InputRecorder(model)

    def slide() -> np.ndarray:
        return sliding_window_sr(
            slide_rec, case.lr, ref, scale, ev.window, ev.overlap, ev.blend, ev.batch_size
        )

    full()  # warm-up
    full_rec.calls = full_rec.lr_voxels = 0
    t0 = time.perf_counter()
    full_out = full()
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    slide_out = slide()
    slide_s = time.perf_counter() - t0
    if slide_out.shape != full_out.shape:
        raise RuntimeError(f"{name}: sliding {slide_out.shape} != full {full_out.shape}")
    a = np.clip(slide_out, 0, 1)
    b = np.clip(full_out, 0, 1)
    mse = max(float(np.mean((a - b) ** 2)), 1e-12)
    return {
        "lr_shape": list(case.lr.shape),
        "hr_shape": list(full_out.shape),
        "full_seconds": full_s,
        "sliding_seconds": slide_s,
        "ratio": slide_s / full_s,
        "full_calls": full_rec.calls,
        "sliding_calls": slide_rec.calls,
        "sliding_work": slide_rec.lr_voxels / full_rec.lr_voxels,
        "full_peak_input_bytes": full_rec.peak_bytes,
        "sliding_peak_input_bytes": slide_rec.peak_bytes,
        "agreement_psnr_db": 10 * math.log10(1.0 / mse),
    }


def compare(plain: dict[str, Any], ray: dict[str, Any]) -> dict[str, float]:
    """Ratios of a Ray fit to the plain loop (same steps): speed, run overhead, fixed cost."""
    plain_rest = plain["loop_seconds"] - plain["train_seconds"]  # set-up and validation
    return {
        "steps_per_second_ratio": plain["train_seconds"] / ray["train_seconds"],
        # fastest epoch of each side: robust to a burst of other work on a shared machine
        "best_epoch_ratio": min(plain["epoch_seconds"]) / min(ray["epoch_seconds"]),
        "run_overhead": ray["wall_seconds"] / plain["loop_seconds"] - 1,
        "ray_fixed_seconds": ray["wall_seconds"] - ray["train_seconds"] - plain_rest,
        "cpu_overhead": ray["loop_cpu_seconds"] / plain["loop_cpu_seconds"] - 1,
    }


def machine_facts(threads: int) -> dict[str, Any]:
    """Cores, torch threads, load average and versions."""
    import ray

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": cores,
        "torch_threads": threads,
        "load_avg_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
    }


def _table(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    """Markdown tables of ``results`` (as written to ``--json``)."""
    m = results["machine"]
    s = results["settings"]
    facts = [
        {"fact": "cores (affinity)", "value": str(m["cores"])},
        {"fact": "torch threads (plain, Ray worker, inference)", "value": str(m["torch_threads"])},
        {"fact": "load average at start (1/5/15 min)", "value": _loads(m["load_avg_start"])},
        {"fact": "load average at end", "value": _loads(m["load_avg_end"])},
        {"fact": "python / torch / ray", "value": f"{m['python']} / {m['torch']} / {m['ray']}"},
        {"fact": "data (synthesise + degrade + load)", "value": f"{s['data_seconds']:.1f} s"},
        {"fact": "ray.init", "value": f"{s['ray_init_seconds']:.1f} s"},
        {"fact": "total run", "value": f"{results['total_seconds']:.0f} s"},
    ]
    wall_rows, cpu_rows = [], []
    for name, r in results["training"].items():
        p, y = r["plain"], r["ray"]
        wall_rows.append(
            {
                "model": name,
                "steps (epochs x steps)": f"{y['steps']} ({s['epochs']}x{r['steps_per_epoch']})",
                "plain train s": f"{p['train_seconds']:.1f}",
                "Ray epochs s": f"{y['train_seconds']:.1f}",
                "steps/s plain": f"{p['steps'] / p['train_seconds']:.3f}",
                "steps/s Ray": f"{y['steps'] / y['train_seconds']:.3f}",
                "steps/s Ray / plain": f"{r['steps_per_second_ratio']:.2f}",
                "same, fastest epochs": f"{r['best_epoch_ratio']:.2f}",
                "plain loop s": f"{p['loop_seconds']:.1f}",
                "Ray fit wall s": f"{y['wall_seconds']:.1f}",
                "run overhead (fit / plain loop - 1)": f"{r['run_overhead']:+.1%}",
                "Ray fixed cost s": f"{r['ray_fixed_seconds']:.1f}",
                "order": r["order"],
            }
        )
        cpu_rows.append(
            {
                "model": name,
                "plain loop CPU s": f"{p['loop_cpu_seconds']:.1f}",
                "Ray worker loop CPU s": f"{y['loop_cpu_seconds']:.1f}",
                "CPU overhead (Ray / plain - 1)": f"{r['cpu_overhead']:+.1%}",
                "plain process wall s (start-up incl.)": f"{p['wall_seconds']:.1f}",
                "last-epoch loss plain / Ray": f"{p['train_loss']:.5f} / {y['train_loss']:.5f}",
            }
        )
    opt_rows = []
    for name, r in results.get("optimizers", {}).items():
        opt_rows.append(
            {
                "model": name,
                "params": f"{r['params']:,}",
                **{
                    f"ms/step {i}": f"{r['step_ms'][i]:.2f} ({r['step_ratio_to_foreach'][i]:.2f})"
                    for i in r["step_ms"]
                },
                **{
                    f"ms/opt.step {i}": (
                        f"{r['optimizer_step_ms'][i]:.3f} "
                        f"({r['optimizer_ratio_to_foreach'][i]:.2f})"
                    )
                    for i in r["optimizer_step_ms"]
                },
            }
        )
    inf_rows = []
    for name, r in results["inference"].items():
        inf_rows.append(
            {
                "model": name,
                "LR -> HR shape": "x".join(map(str, r["lr_shape"]))
                + " -> "
                + "x".join(map(str, r["hr_shape"])),
                "full pass s": f"{r['full_seconds']:.2f}",
                "sliding s": f"{r['sliding_seconds']:.2f}",
                "sliding / full": f"{r['ratio']:.2f}",
                "LR voxels fed / volume": f"{r['sliding_work']:.2f}",
                "calls (full / sliding)": f"{r['full_calls']} / {r['sliding_calls']}",
                "peak input per call, MiB (full / sliding)": (
                    f"{r['full_peak_input_bytes'] / 2**20:.2f} / "
                    f"{r['sliding_peak_input_bytes'] / 2**20:.2f}"
                ),
                "PSNR sliding vs full dB": f"{r['agreement_psnr_db']:.1f}",
            }
        )
    return "\n\n".join(
        [
            _table(facts),
            f"Training: batch {s['batch_size']}, HR patch {s['patch_size']}^3, "
            f"{s['val_patches']} validation patches per epoch, 1 Ray worker with "
            f"{m['torch_threads']} CPUs; plain loop in a fresh process.",
            _table(wall_rows),
            "CPU seconds of the training process from the loop's start to its end (training, "
            "validation, reports, checkpoints; the Ray worker's background threads included): "
            "less sensitive than wall time to other work on a shared machine.",
            _table(cpu_rows),
            f"Inference: window {s['window']} HR voxels, overlap {s['overlap']}, "
            f"eval batch {s['eval_batch']}, one timed run each after a warm-up full pass; "
            "random-weight models.",
            _table(inf_rows),
            "Adam implementations: median ms per train_step and per optimiser step() "
            "(ratio to foreach in brackets); same batches, interleaved rounds.",
            _table(opt_rows) if opt_rows else "(not measured)",
        ]
    )


def _loads(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def run(
    quick: bool, threads: int, seconds: float | None, models: tuple[str, ...] = MODELS
) -> dict[str, Any]:
    """The whole benchmark; results as a JSON-able dict."""
    import ray

    from crfm_bench.cluster import ensure_ray

    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    machine = machine_facts(threads)
    epochs = 2 if quick else 4
    target = seconds if seconds is not None else 40.0
    results: dict[str, Any] = {"machine": machine, "training": {}, "inference": {}}
    with tempfile.TemporaryDirectory(prefix="crfm-engine-bench-") as tmp:
        params = make_params(Path(tmp), quick, threads, epochs, val_patches=1 if quick else 2)
        t0 = time.perf_counter()
        cases = make_data(params)
        data_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        ensure_ray(params.ray)
        ray_init = time.perf_counter() - t0
        try:
            cases_ref = ray.put((cases["train"], cases["val"]))
            for i, name in enumerate(models):
                if quick:
                    steps = QUICK_STEPS
                else:
                    steps = calibrate_steps(params, name, cases["train"], target, max_steps=200)
                order = ("plain", "ray") if i % 2 == 0 else ("ray", "plain")
                out: dict[str, Any] = {"steps_per_epoch": steps, "order": " then ".join(order)}
                for side in order:
                    if side == "plain":
                        out["plain"] = plain_fit_in_process(
                            params, name, cases["train"], cases["val"], steps
                        )
                    else:
                        out["ray"] = ray_fit(params, name, cases_ref, steps)
                results["training"][name] = {**out, **compare(out["plain"], out["ray"])}
        finally:
            ray.shutdown()
        for name in models:
            results["inference"][name] = bench_inference(params, name, cases["test"][0])
        results["optimizers"] = {
            name: bench_optimizers(params, name, cases["train"], rounds=2 if quick else 5)
            for name in models
        }
    machine["load_avg_end"] = list(os.getloadavg())
    results["settings"] = {
        "quick": quick,
        "epochs": epochs,
        "target_train_seconds": None if quick else target,
        "batch_size": params.train.batch_size,
        "patch_size": params.train.patch_size,
        "val_patches": params.train.val_patches,
        "window": params.eval.window,
        "overlap": params.eval.overlap,
        "eval_batch": params.eval.batch_size,
        "data_seconds": data_seconds,
        "ray_init_seconds": ray_init,
    }
    results["total_seconds"] = time.perf_counter() - t_start
    return results


def main() -> None:
    from crfm_bench.stackenv import apply_defaults

    apply_defaults()  # before Ray starts: no telemetry, no auth token in the home folder
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (under a minute)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--threads", type=int, default=2, help="torch threads / worker CPUs")
    parser.add_argument(
        "--seconds", type=float, default=None, help="plain training time to aim for per model"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        parser.error("--models: give at least one model")
    results = run(args.quick, max(1, args.threads), args.seconds, models)
    print(report(results))
    if args.json is not None:
        from crfm_bench.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
