"""Benchmark the degradations (``make bench``; not a test).

1. k-space degradation of a 256x256x150 float32 volume (an IXI-sized scan), timed as a
   ratio of the bare forward + inverse FFT of the same volume (complex ``fftn`` then
   ``ifftn``, ``norm="forward"``): the floor any FFT-based implementation pays. Target < 1.5.
   The reference implementation (``kspace_crop`` with ``fftshift`` copies) and the
   image-domain operator are listed for comparison. Median of ``--repeats`` runs after a
   warm-up.
2. ``degrade_dataset`` throughput (volumes per second, NIfTI read + degrade + gzip write +
   sha256) on a small HR manifest of synthetic 96^3 volumes written to a temporary folder.

Usage: ``python benchmarks/degrade.py [--repeats 7] [--volumes 8] [--size 96] [--threads N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from timing import median_time

from crfm_bench.config import DegradeConfig, Params, PathsConfig
from crfm_bench.data.manifest import HR_COLUMNS, fmt_tuple, sha256_file
from crfm_bench.data.volume import Volume, save_volume
from crfm_bench.degrade import ImageDegradation, KSpaceDegradation
from crfm_bench.degrade.kspace import kspace_crop
from crfm_bench.degrade.stage import degrade_dataset

SHAPE = (256, 256, 150)


def phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Smooth ellipsoid with texture: positive, brain-like intensity range."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    r2 = sum(g**2 / a**2 for g, a in zip(grid, (0.8, 0.9, 0.85), strict=True))
    body = (r2 < 1).astype(np.float32)
    return body * (0.6 + 0.4 * rng.random(shape, dtype=np.float32))


def bench_operators(repeats: int) -> list[tuple[str, float, float]]:
    x_np = phantom(SHAPE, 0)
    x = torch.from_numpy(x_np)
    vol = Volume(x_np, np.eye(4))
    rng = np.random.default_rng(0)

    def floor() -> None:
        torch.fft.ifftn(torch.fft.fftn(x, norm="forward"), norm="forward")

    base = median_time(floor, repeats)
    rows = [("bare fftn + ifftn (floor)", base, 1.0)]
    cases: list[tuple[str, Callable[[], object]]] = [
        ("kspace x2", lambda: KSpaceDegradation(2).apply(vol, rng)),
        ("kspace 1x1x4", lambda: KSpaceDegradation((1, 1, 4)).apply(vol, rng)),
        ("kspace x2 hann + snr 30", lambda: KSpaceDegradation(2, "hann", snr=30).apply(vol, rng)),
        (
            "kspace x2 + zero-filled",
            lambda: KSpaceDegradation(2).apply_with_zero_fill(vol, rng),
        ),
        ("reference kspace_crop x2 .abs()", lambda: kspace_crop(x, (2, 2, 2)).abs()),
        ("reference kspace_crop 1x1x4 .abs()", lambda: kspace_crop(x, (1, 1, 4)).abs()),
        ("image gaussian x2", lambda: ImageDegradation(2).apply(vol, rng)),
        (
            "image slice_profile 1x1x4",
            lambda: ImageDegradation((1, 1, 4), "slice_profile").apply(vol, rng),
        ),
    ]
    for name, fn in cases:
        t = median_time(fn, repeats)
        rows.append((name, t, t / base))
    return rows


def write_hr_manifest(root: Path, n: int, size: int) -> None:
    hr = root / "hr"
    rows = []
    for i in range(n):
        subject = f"sub-{i:03d}"
        name = f"{subject}_T1w.nii.gz"
        save_volume(hr / name, phantom((size,) * 3, i), np.diag([1.0, 1.0, 1.0, 1.0]))
        rows.append(
            {
                "subject": subject,
                "contrast": "T1w",
                "path": name,
                "shape": ",".join([str(size)] * 3),
                "spacing": fmt_tuple((1.0, 1.0, 1.0)),
                "sha256": sha256_file(hr / name),
                "split": "train",
                "source": "synthetic",
                "resampled": False,
                "origin": "benchmark",
            }
        )
    pd.DataFrame(rows, columns=list(HR_COLUMNS)).to_csv(hr / "manifest.csv", index=False)


def bench_stage(n: int, size: int) -> list[tuple[str, float, float]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="crfm-bench-degrade-") as tmp:
        root = Path(tmp) / "data"
        write_hr_manifest(root, n, size)
        for domain, scale in (("kspace", "2"), ("kspace", "1x1x4"), ("image", "2")):
            params = Params(
                paths=PathsConfig(data_dir=root),
                degrade=DegradeConfig(domains=[domain], scales=[scale]),
            )
            t0 = time.perf_counter()
            degrade_dataset(params, progress=False)
            dt = time.perf_counter() - t0
            out.append((f"degrade_dataset {domain}-{scale} ({n} x {size}^3)", dt, n / dt))
    return out


def bench_synthesis(n: int) -> list[tuple[str, float]]:
    """Seconds per synthetic subject (all four contrasts) at the default and at 1 mm spacing."""
    from crfm_bench.config import SynthConfig
    from crfm_bench.data.synth import load_template, synthesize_subject

    load_template()  # reading the template once is not per-subject work
    out = []
    for spacing in (2.0, 1.0):
        cfg = SynthConfig(spacing_mm=spacing)
        synthesize_subject(cfg, 0)  # warm the per-spacing smoothed maps
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            synthesize_subject(cfg, i)
        out.append((f"synthesis, {spacing:g} mm, 4 contrasts", (time.perf_counter() - t0) / n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--volumes", type=int, default=8)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; volume {SHAPE} float32")
    print(f"{'operation':<40} {'median s':>9} {'x floor':>8}")
    for name, t, ratio in bench_operators(args.repeats):
        print(f"{name:<40} {t:>9.4f} {ratio:>8.2f}")
    print()
    print(f"{'stage (in-process, workers=0)':<52} {'s':>7} {'vol/s':>7}")
    for name, t, rate in bench_stage(args.volumes, args.size):
        print(f"{name:<52} {t:>7.2f} {rate:>7.2f}")
    print()
    print(f"{'synthesis':<52} {'s/subject':>9}")
    for name, t in bench_synthesis(2):
        print(f"{name:<52} {t:>9.2f}")


if __name__ == "__main__":
    main()
