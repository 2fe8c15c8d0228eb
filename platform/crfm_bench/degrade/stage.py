"""The ``degrade`` stage: LR versions of the HR dataset, one folder per (domain, scale).

Reads ``<data_dir>/hr/manifest.csv`` (schema: :mod:`crfm_bench.data.manifest`), and for
each (domain, scale) writes ``<data_dir>/lr/<domain>-<scale>/`` whole or not at all
(:func:`crfm_bench.atomic.atomic_dir`: a failure leaves an earlier good folder intact):

* ``<subject>_<contrast>.nii.gz``: the LR volume with its exact affine;
* ``<subject>_<contrast>_zf.nii.gz``: k-space only, with ``degrade.kspace.save_zero_filled``:
  the same band zero-filled on the HR grid;
* ``manifest.csv``: one row per volume, columns :data:`LR_COLUMNS` (paths relative to the
  folder; ``zf_path`` empty when no zero-filled file; ``noise_sigma`` empty without noise).

The LR version (:func:`crfm_bench.data.manifest.manifest_version`) is a content address, as
the HR one: per volume the LR voxels' sha256, grid, affine, split, the operator's
parameters and seed, and the HR source's voxel sha256 -- never the folder it lies in.

Reproducibility: each volume's random generator is seeded by :func:`volume_seed` from
(``degrade.seed``, subject, contrast, domain, scale) only, so results do not depend on order,
on ``degrade.workers`` or on which other volumes are processed. nibabel writes gzip
members with mtime 0 and no file name, so the same inputs give byte-identical files (and
an identical manifest) on the same machine and library versions; floating-point FFT
results may differ in the last bits across CPUs or torch/numpy builds.

With ``degrade.workers > 0`` volumes run as Ray tasks (at most ``workers`` at once) on the
Ray every command uses (``ray.address`` / ``RAY_ADDRESS``, else a local Ray of
``ray.num_cpus``); tasks read and write ``data_dir`` directly, so on a remote cluster it
must be a shared filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from crfm_bench.atomic import atomic_dir, ensure_writable_dir
from crfm_bench.config import Params
from crfm_bench.data.manifest import (
    fmt_affine,
    fmt_tuple,
    read_manifest,
    resolve,
    sha256_file,
    voxel_sha256,
    write_manifest,
)
from crfm_bench.data.volume import Volume, load_volume, save_volume
from crfm_bench.degrade.base import Degradation
from crfm_bench.degrade.build import DOMAINS, build_operator
from crfm_bench.degrade.kspace import KSpaceDegradation
from crfm_bench.errors import CrfmBenchError, InputError, MissingInputError
from crfm_bench.scale import Scale, format_scale, parse_scale

LR_COLUMNS = (
    "subject",
    "contrast",
    "split",
    "domain",
    "scale",
    "hr_path",
    "lr_path",
    "zf_path",
    "lr_shape",
    "lr_spacing",
    "seed",
    "noise_sigma",
    "params",
    "sha256",
    "hr_sha256",
    "data_sha256",
    "affine",
    "zf_data_sha256",
    "hr_data_sha256",
)


class VolumeJob(NamedTuple):
    """One (subject, contrast) to degrade; picklable, so it can travel to a Ray worker."""

    subject: str
    contrast: str
    split: str
    hr_file: str  # absolute
    hr_rel: str  # relative to the output folder
    hr_sha256: str | None
    out_dir: str  # the staging folder
    operator: Degradation
    seed: int
    save_zero_filled: bool


def volume_seed(base_seed: int, subject: str, contrast: str, domain: str, scale: Scale) -> int:
    """Deterministic 63-bit seed of one LR volume (independent of order and parallelism).

    ``SeedSequence`` of the sha256 of ``base_seed, subject, contrast, domain, scale`` (joined
    by U+001F); ``numpy.random.default_rng(seed)`` reproduces the volume's noise.
    """
    text = "\x1f".join((str(base_seed), subject, contrast, domain, format_scale(scale)))
    entropy = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "little")
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def lr_name(subject: str, contrast: str, zero_filled: bool = False) -> str:
    """File name of an LR volume: ``<subject>_<contrast>[_zf].nii.gz``."""
    return f"{subject}_{contrast}{'_zf' if zero_filled else ''}.nii.gz"


def degrade_volume(job: VolumeJob) -> dict[str, Any]:
    """Degrade one HR file into ``job.out_dir``; return its manifest row (see LR_COLUMNS).

    Raises InputError naming the HR file if its sha256 differs from the HR manifest, it is
    unreadable, or it is too small for the scale.
    """
    hr_file = Path(job.hr_file)
    if not hr_file.is_file():
        raise MissingInputError(f"{hr_file}: HR file listed in the manifest not found")
    if job.hr_sha256 and sha256_file(hr_file) != job.hr_sha256:
        raise InputError(f"{hr_file}: sha256 differs from the HR manifest (file changed since)")
    hr = load_volume(hr_file)
    op = job.operator
    rng = np.random.default_rng(job.seed)
    zf: Volume | None = None
    try:
        if job.save_zero_filled and isinstance(op, KSpaceDegradation):
            lr, zf = op.apply_with_zero_fill(hr, rng)
        else:
            lr = op.apply(hr, rng)
        sigma = op.noise_sigma(hr) if isinstance(op, KSpaceDegradation) else None
    except InputError as exc:
        raise InputError(f"{hr_file}: {exc}") from None
    out = Path(job.out_dir)
    lr_file = out / lr_name(job.subject, job.contrast)
    save_volume(lr_file, lr.data, lr.affine)
    zf_rel = ""
    if zf is not None:
        zf_rel = lr_name(job.subject, job.contrast, zero_filled=True)
        save_volume(out / zf_rel, zf.data, zf.affine)
    return {
        "subject": job.subject,
        "contrast": job.contrast,
        "split": job.split,
        "domain": op.domain,
        "scale": format_scale(op.scale),
        "hr_path": job.hr_rel,
        "lr_path": lr_file.name,
        "zf_path": zf_rel,
        "lr_shape": ",".join(str(n) for n in lr.data.shape),
        "lr_spacing": fmt_tuple(lr.spacing, digits=6),
        "seed": job.seed,
        "noise_sigma": float("nan") if sigma is None else sigma,
        "params": json.dumps(op.describe(), sort_keys=True),
        "sha256": sha256_file(lr_file),
        "hr_sha256": job.hr_sha256 or "",
        "data_sha256": voxel_sha256(lr.data),
        "affine": fmt_affine(lr.affine),
        "zf_data_sha256": voxel_sha256(zf.data) if zf is not None else "",
        "hr_data_sha256": voxel_sha256(hr.data),
    }


def _select(params: Params, domain: str | None, scale: object) -> list[tuple[str, Scale]]:
    if domain is None:
        domains = list(params.degrade.domains)
    elif domain in DOMAINS:
        domains = [domain]
    else:
        raise InputError(f"--domain: {domain!r} is not one of {', '.join(DOMAINS)}")
    if scale is None:
        scales = [parse_scale(s, what="degrade.scales") for s in params.degrade.scales]
    else:
        scales = [parse_scale(scale, what="--scale")]
    return [(d, s) for d in domains for s in scales]


def _hr_rows(manifest: Path, contrasts: Sequence[str] | None) -> pd.DataFrame:
    df = read_manifest(manifest)
    if contrasts:
        absent = sorted(set(contrasts) - set(df["contrast"]))
        if absent:
            raise MissingInputError(
                f"{manifest}: degrade.contrasts asks for {', '.join(absent)}, not in the manifest"
            )
        df = df[df["contrast"].isin(contrasts)]
    if df.empty:
        raise InputError(f"{manifest}: no HR volumes to degrade")
    dup = df.duplicated(["subject", "contrast"])
    if dup.any():
        first = df[dup].iloc[0]
        raise InputError(f"{manifest}: ({first['subject']}, {first['contrast']}) listed twice")
    return df.sort_values(["subject", "contrast"], kind="stable").reset_index(drop=True)


@contextlib.contextmanager
def _progress(enabled: bool, label: str, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


@contextlib.contextmanager
def _ray_session(params: Params) -> Iterator[None]:
    """Ray for the degradation tasks, joined or started as every command does
    (:func:`crfm_bench.cluster.ensure_ray`); shut down only if this call started it."""
    import ray

    from crfm_bench.cluster import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(params.ray)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _run_in_process(jobs: list[VolumeJob], tick: Callable[[], None]) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        rows.append(degrade_volume(job))
        tick()
    return rows


def _run_ray(jobs: list[VolumeJob], workers: int, tick: Callable[[], None]) -> list[dict[str, Any]]:
    import ray
    from ray.exceptions import RayTaskError

    remote = ray.remote(num_cpus=1, max_retries=0)(degrade_volume)
    queue = list(jobs)
    pending: list[Any] = []
    rows: list[dict[str, Any]] = []
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                pending.append(remote.remote(queue.pop(0)))
            done, pending = ray.wait(pending, num_returns=1)
            rows.append(ray.get(done[0]))
            tick()
    except RayTaskError as exc:
        for ref in pending:
            ray.cancel(ref)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, CrfmBenchError):
            raise cause from None
        raise
    return rows


def degrade_dataset(
    params: Params,
    domain: str | None = None,
    scale: object = None,
    progress: bool = True,
) -> list[Path]:
    """Write ``<data_dir>/lr/<domain>-<scale>/`` for each requested (domain, scale).

    ``domain``/``scale`` None: every entry of ``params.degrade.domains``/``scales``; a
    given one must parse (InputError naming the option) and is run alone (DVC matrix
    stages). Returns the output folders in the order made. Raises MissingInputError if the
    HR manifest or a listed HR file is missing, InputError for a corrupt HR file, an
    unwritable data directory or a bad option; a folder is replaced only when complete.
    """
    cfg = params.degrade
    combos = _select(params, domain, scale)
    data_dir = Path(params.paths.data_dir)
    hr_manifest = data_dir / "hr" / "manifest.csv"
    hr = _hr_rows(hr_manifest, cfg.contrasts)
    lr_root = ensure_writable_dir(data_dir / "lr", what="LR data directory").resolve()
    ray_ctx = _ray_session(params) if cfg.workers > 0 else contextlib.nullcontext()
    outputs: list[Path] = []
    with ray_ctx:
        for dom, factors in combos:
            op = build_operator(dom, factors, cfg)
            name = f"{dom}-{format_scale(factors)}"
            dest = lr_root / name
            with atomic_dir(dest) as stage:
                jobs = []
                for row in hr.itertuples(index=False):
                    hr_file = resolve(hr_manifest, str(row.path))
                    digest = row.sha256 if isinstance(row.sha256, str) and row.sha256 else None
                    jobs.append(
                        VolumeJob(
                            subject=str(row.subject),
                            contrast=str(row.contrast),
                            split=str(row.split),
                            hr_file=str(hr_file),
                            hr_rel=os.path.relpath(hr_file, dest),
                            hr_sha256=digest,
                            out_dir=str(stage),
                            operator=op,
                            seed=volume_seed(
                                cfg.seed, str(row.subject), str(row.contrast), dom, factors
                            ),
                            save_zero_filled=cfg.kspace.save_zero_filled and dom == "kspace",
                        )
                    )
                with _progress(progress, f"degrade {name}", len(jobs)) as tick:
                    if cfg.workers > 0:
                        rows = _run_ray(jobs, cfg.workers, tick)
                    else:
                        rows = _run_in_process(jobs, tick)
                table = pd.DataFrame(rows, columns=list(LR_COLUMNS))
                write_manifest(table, stage / "manifest.csv")
            outputs.append(data_dir / "lr" / name)
    return outputs
