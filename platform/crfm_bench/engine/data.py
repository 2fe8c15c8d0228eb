"""What a model trains and is evaluated on: aligned (LR target, HR target, HR reference) cases.

A *case* is one subject of one split for the benchmark setting (``params.task``): the LR
target from the degradation manifest, its HR source, and the HR reference contrast of the
same subject. Intensities are divided by the LR target's foreground 99.5th percentile (known
at inference time, unlike HR's), the HR target by the same divisor; the reference by its own.

:class:`PatchDataset` samples aligned patches. Degradations are origin-aligned (LR voxel
``m`` sits at HR voxel ``m * s``), so the LR patch at corner ``c`` pairs exactly with the HR
patch at corner ``c * s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crfm_bench.config import Params
from crfm_bench.data.manifest import read_manifest, resolve
from crfm_bench.data.volume import load_volume
from crfm_bench.errors import InputError, MissingInputError


@dataclass
class Case:
    """One subject: normalised float32 arrays (X, Y, Z) and what is needed to undo it."""

    subject: str
    split: str
    lr: np.ndarray
    hr: np.ndarray
    ref: np.ndarray | None
    divisor: float
    hr_affine: np.ndarray
    lr_affine: np.ndarray
    hr_path: str
    lr_path: str


def lr_dir(params: Params) -> Path:
    """Folder of the LR version the task uses: ``<data>/lr/<domain>-<scale>``."""
    return params.paths.data_dir / "lr" / f"{params.task.domain}-{params.task.scale}"


def robust_divisor(volume: np.ndarray) -> float:
    """The foreground 99.5th percentile (metric contract's mask rule), never zero."""
    from crfm_bench.metrics import foreground_mask

    fg = volume[foreground_mask(volume)]
    value = float(np.percentile(fg if fg.size else volume, 99.5))
    return value if value > 0 else float(np.abs(volume).max() or 1.0)


def load_cases(params: Params, splits: tuple[str, ...], need_reference: bool = True) -> list[Case]:
    """Cases of ``splits`` for ``params.task``, read from the manifests under ``data_dir``."""
    task = params.task
    scale = task.factors
    lr_manifest = lr_dir(params) / "manifest.csv"
    hr_manifest = params.paths.data_dir / "hr" / "manifest.csv"
    lr_rows = read_manifest(
        lr_manifest, required=("subject", "contrast", "split", "lr_path", "hr_path")
    )
    hr_rows = read_manifest(hr_manifest)
    rows = lr_rows[(lr_rows["contrast"] == task.target) & (lr_rows["split"].isin(splits))]
    if rows.empty:
        raise InputError(
            f"{lr_manifest}: no {task.target} volumes in split {'/'.join(splits)} "
            "(check task.target and degrade.contrasts)"
        )
    refs = (
        hr_rows[hr_rows["contrast"] == task.reference].set_index("subject")
        if task.reference
        else None
    )
    cases = []
    for row in rows.sort_values("subject").itertuples():
        lr = load_volume(resolve(lr_manifest, row.lr_path))
        hr = load_volume(resolve(lr_manifest, row.hr_path))
        expected = tuple(n * s for n, s in zip(lr.data.shape, scale, strict=True))
        if hr.data.shape != expected:
            raise InputError(
                f"{resolve(lr_manifest, row.hr_path)}: HR shape {hr.data.shape} is not the LR shape "
                f"{lr.data.shape} times task.scale {task.scale}; make HR shapes divisible by the "
                "scale (synth.shape_multiple)"
            )
        ref = None
        if need_reference and refs is not None:
            if row.subject not in refs.index:
                raise MissingInputError(
                    f"{hr_manifest}: subject {row.subject} has no {task.reference} (task.reference)"
                )
            ref_path = resolve(hr_manifest, refs.loc[row.subject, "path"])
            ref_vol = load_volume(ref_path)
            if ref_vol.data.shape != hr.data.shape or not np.allclose(
                ref_vol.affine, hr.affine, atol=1e-3
            ):
                raise InputError(
                    f"{ref_path}: reference grid {ref_vol.data.shape} does not match the target's "
                    f"{hr.data.shape} (ingest brings contrasts onto one grid)"
                )
            ref = (ref_vol.data / robust_divisor(ref_vol.data)).astype(np.float32)
        divisor = robust_divisor(lr.data)
        cases.append(
            Case(
                subject=str(row.subject),
                split=str(row.split),
                lr=(lr.data / divisor).astype(np.float32),
                hr=(hr.data / divisor).astype(np.float32),
                ref=ref,
                divisor=divisor,
                hr_affine=hr.affine,
                lr_affine=lr.affine,
                hr_path=str(resolve(lr_manifest, row.hr_path)),
                lr_path=str(resolve(lr_manifest, row.lr_path)),
            )
        )
    return cases


def patch_shape(
    hr_shape: tuple[int, ...], patch_size: int, scale: tuple[int, ...]
) -> tuple[int, ...]:
    """HR patch shape: ``patch_size`` per axis, at most the volume, a multiple of the scale."""
    return tuple(
        max(s, (min(patch_size, n) // s) * s) for n, s in zip(hr_shape, scale, strict=True)
    )


class PatchDataset(torch.utils.data.Dataset):
    """Aligned random patches ``{"lr": (1,*p/s), "hr": (1,*p), "ref": (1,*p)}`` from cases.

    Item ``i`` of epoch ``e`` is drawn with ``numpy.random.default_rng([seed, e, i])``, so
    samples do not depend on the worker that draws them (sharding by DistributedSampler
    splits indices, not randomness). A fraction ``foreground_fraction`` of patches is
    centred on a foreground voxel of the LR target.
    """

    def __init__(
        self,
        cases: list[Case],
        scale: tuple[int, ...],
        patch_size: int,
        length: int,
        seed: int = 0,
        foreground_fraction: float = 0.9,
    ) -> None:
        if not cases:
            raise InputError("no cases to sample patches from")
        self.cases = cases
        self.scale = tuple(scale)
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.fg_fraction = foreground_fraction
        # one patch shape for all cases (the smallest volume bounds it), so batches stack
        shapes = [patch_shape(c.hr.shape, patch_size, self.scale) for c in cases]
        common = tuple(min(axis) for axis in zip(*shapes, strict=True))
        self.hr_patch = [common] * len(cases)
        from crfm_bench.metrics import foreground_mask

        self.fg = [np.argwhere(foreground_mask(c.lr)) for c in cases]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def corner(self, idx: int, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        """(case index, LR corner) for one draw."""
        k = int(rng.integers(len(self.cases)))
        case = self.cases[k]
        plr = [p // s for p, s in zip(self.hr_patch[k], self.scale, strict=True)]
        hi = [n - p for n, p in zip(case.lr.shape, plr, strict=True)]
        if len(self.fg[k]) and rng.random() < self.fg_fraction:
            centre = self.fg[k][rng.integers(len(self.fg[k]))]
            c = [int(np.clip(ci - p // 2, 0, h)) for ci, p, h in zip(centre, plr, hi, strict=True)]
        else:
            c = [int(rng.integers(0, h + 1)) for h in hi]
        return k, tuple(c)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        k, c = self.corner(idx, rng)
        case = self.cases[k]
        p = self.hr_patch[k]
        plr = [pi // s for pi, s in zip(p, self.scale, strict=True)]
        lr_sl = tuple(slice(ci, ci + n) for ci, n in zip(c, plr, strict=True))
        hr_sl = tuple(slice(ci * s, ci * s + n) for ci, s, n in zip(c, self.scale, p, strict=True))
        out = {
            "lr": torch.from_numpy(np.ascontiguousarray(case.lr[lr_sl]))[None],
            "hr": torch.from_numpy(np.ascontiguousarray(case.hr[hr_sl]))[None],
        }
        if case.ref is not None:
            out["ref"] = torch.from_numpy(np.ascontiguousarray(case.ref[hr_sl]))[None]
        else:
            out["ref"] = torch.zeros((1, *p))
        return out
