r"""Ingest a real dataset (IXI, BraTS, BIDS) into the HR folder and its manifest.

Steps, in this order, so that a bad dataset fails before anything is written:

1. **scan** the tree by file names (:mod:`crfm_bench.data.sources`); contrasts are paired
   by subject id, never by file order or voxel index;
2. **select** the subjects that have every needed contrast (the others are reported and
   skipped) and draw the **splits** by person (:func:`crfm_bench.data.manifest.assign_splits`
   over the sources' groups, so sessions/time points of one person share a split);
3. **validate** every file that will be used with :func:`crfm_bench.data.volume.load_volume`
   (readable, not truncated, 3D, non-empty, finite, invertible affine) and check that each
   contrast covers at least :data:`MIN_OVERLAP` of the target contrast's field of view in
   world space;
4. **write**, staged with :func:`crfm_bench.atomic.atomic_dir`: one float32
   ``<subject>_<contrast>.nii.gz`` per (subject, contrast), all of a subject's contrasts on
   the target contrast's grid, ``manifest.csv`` (:data:`~crfm_bench.data.manifest.HR_COLUMNS`; its content
   version covers the voxels, grids, splits and the ingest settings, not ``src``)
   and ``fingerprint.json``. A failure anywhere leaves an earlier ``out_dir`` untouched.

Resampling by the affines. With :math:`A_s`, :math:`A_t` the voxel-to-world (RAS, mm)
affines of a source and the target image, target voxel :math:`v_t` sits at world point
:math:`A_t v_t`, which is source voxel :math:`v_s = A_s^{-1} A_t v_t`. The source is
interpolated there by a cubic B-spline (``scipy.ndimage.affine_transform``, ``order=3``,
with its prefilter), zero outside the source's field of view, and clipped to the source's
intensity range (and 0) to remove spline overshoot, which would create negative
magnitudes. This is the scanner alignment only: no registration is done, so head motion
between the acquisitions stays (IXI T1 vs T2/PD). A contrast is resampled (and recorded
``resampled=True``) when its shape differs from the target's or its affine differs by more
than :data:`GRID_ATOL` mm in any entry; otherwise its voxels are copied and it is written
with the target's affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from crfm_bench.atomic import atomic_dir
from crfm_bench.config import CONTRASTS
from crfm_bench.data.fingerprint import write_fingerprint
from crfm_bench.data.manifest import (
    SPLITS,
    assign_splits,
    save_hr_entry,
    split_counts,
    write_manifest,
)
from crfm_bench.data.sources import SourceFile, scan_source
from crfm_bench.data.volume import load_volume
from crfm_bench.errors import InputError

DEFAULT_TARGET = "T2w"
RESAMPLE_ORDER = 3
MIN_OVERLAP = 0.5
GRID_ATOL = 1e-3
_SHOWN = 5


@dataclass
class IngestReport:
    """What :func:`ingest_dataset` did.

    ``subjects``: ids written; ``skipped``: id -> reason; ``resampled``: (subject, contrast)
    brought onto the target grid; ``splits``: number of subjects per split;
    ``duplicates``: files not used because another file had the same (subject, contrast);
    ``ignored``: NIfTI files whose names look like the layout but do not match it.
    """

    kind: str
    src: Path
    out_dir: Path
    target: str
    contrasts: tuple[str, ...]
    subjects: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    resampled: list[tuple[str, str]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    duplicates: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One short paragraph: subjects kept, skipped with reasons, resampled, splits."""
        parts = [
            f"Ingested {len(self.subjects)} {self.kind} subjects "
            f"({', '.join(self.contrasts)} on the {self.target} grid) from {self.src} "
            f"into {self.out_dir}."
        ]
        if self.skipped:
            shown = [f"{s} {r}" for s, r in list(self.skipped.items())[:_SHOWN]]
            more = len(self.skipped) - len(shown)
            tail = f"; and {more} more" if more else ""
            parts.append(f"Skipped {len(self.skipped)}: {'; '.join(shown)}{tail}.")
        else:
            parts.append("Skipped none.")
        parts.append(f"Resampled {len(self.resampled)} volumes onto the {self.target} grid.")
        parts.append(
            "Splits: " + ", ".join(f"{k} {self.splits.get(k, 0)}" for k in SPLITS) + " subjects."
        )
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate files not used.")
        if self.ignored:
            parts.append(f"{len(self.ignored)} files with unrecognised names ignored.")
        return " ".join(parts)


def same_grid(
    shape_a: tuple[int, ...],
    affine_a: np.ndarray,
    shape_b: tuple[int, ...],
    affine_b: np.ndarray,
    atol: float = GRID_ATOL,
) -> bool:
    """True if two images share a voxel grid: same shape, affines equal within ``atol`` mm."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, rtol=0, atol=atol)


def fov_overlap(
    shape: tuple[int, ...],
    affine: np.ndarray,
    target_shape: tuple[int, ...],
    target_affine: np.ndarray,
    points_per_axis: int = 32,
) -> float:
    """Fraction (0-1) of the target's field of view that lies inside the source's.

    Estimated on a regular lattice of at most ``points_per_axis`` target voxel centres per
    axis: a point counts if it maps (by the affines, see the module docstring) inside the
    source's voxel extent ``[-0.5, n - 0.5]`` on every axis. Exact for rotated grids, unlike
    a comparison of axis-aligned bounding boxes.
    """
    axes = [np.linspace(0, n - 1, min(n, points_per_axis)) for n in target_shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    m = np.linalg.inv(affine) @ np.asarray(target_affine, dtype=np.float64)
    vox = grid @ m[:3, :3].T + m[:3, 3]
    upper = np.asarray(shape, dtype=np.float64) - 0.5
    inside = np.all((vox >= -0.5) & (vox <= upper), axis=1)
    return float(inside.mean())


def pad_to_multiple(data: np.ndarray, multiple: int) -> np.ndarray:
    """Zero-pad each axis at its far end up to a multiple of ``multiple``.

    Padding after the last voxel keeps voxel 0 where it was, so the affine is unchanged; it
    lets every integer scale that divides ``multiple`` divide the grid (BraTS has 155 slices).
    """
    if multiple <= 1:
        return data
    pad = [(0, (-n) % multiple) for n in data.shape]
    return np.pad(data, pad) if any(p for _, p in pad) else data


def resample_to_grid(
    data: np.ndarray,
    affine: np.ndarray,
    target_shape: tuple[int, ...],
    target_affine: np.ndarray,
    order: int = RESAMPLE_ORDER,
) -> np.ndarray:
    """Resample ``data`` (X, Y, Z) with voxel-to-world ``affine`` onto another grid.

    Returns float32 ``target_shape`` whose voxel ``v`` holds ``data`` interpolated at world
    point ``target_affine @ v`` (B-spline of ``order``: 1 linear, 3 cubic), 0 outside the
    source's field of view. For ``order > 1`` the result is clipped to the range of
    ``data`` and 0 (no spline overshoot).
    """
    m = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(
        target_affine, dtype=np.float64
    )
    out = ndimage.affine_transform(
        np.asarray(data, dtype=np.float64),
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=tuple(int(n) for n in target_shape),
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=order > 1,
    )
    if order > 1:
        lo, hi = min(float(data.min()), 0.0), max(float(data.max()), 0.0)
        np.clip(out, lo, hi, out=out)
    return out.astype(np.float32)


def _check_contrast(name: str, what: str) -> str:
    if name not in CONTRASTS:
        raise InputError(
            f"{what} '{name}': unknown contrast; use {', '.join(CONTRASTS[:-1])} or {CONTRASTS[-1]}"
        )
    return name


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    ok = 0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
    if not ok:
        raise InputError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction}: each must be in "
            "[0, 1) and their sum below 1"
        )


def _select(
    files: list[SourceFile], needed: tuple[str, ...]
) -> tuple[dict[str, dict[str, SourceFile]], dict[str, str], list[Path]]:
    """Pick one file per (subject, contrast); split subjects into complete and skipped."""
    by_subject: dict[str, dict[str, list[SourceFile]]] = {}
    for f in files:
        by_subject.setdefault(f.subject, {}).setdefault(f.contrast, []).append(f)
    complete: dict[str, dict[str, SourceFile]] = {}
    skipped: dict[str, str] = {}
    duplicates: list[Path] = []
    for subject in sorted(by_subject):
        found = by_subject[subject]
        missing = [c for c in needed if c not in found]
        if missing:
            skipped[subject] = f"lacks {', '.join(missing)}"
            continue
        chosen = {}
        for contrast in needed:
            ranked = sorted(found[contrast], key=lambda f: (f.rank, str(f.path)))
            chosen[contrast] = ranked[0]
            duplicates.extend(f.path for f in ranked[1:])
        complete[subject] = chosen
    return complete, skipped, duplicates


def _validate(subjects: dict[str, dict[str, SourceFile]], target: str) -> None:
    """Load every file once (InputError naming a bad file) and check world-space overlap."""
    for chosen in subjects.values():
        grids = {}
        for contrast, f in chosen.items():
            vol = load_volume(f.path)
            grids[contrast] = (vol.data.shape, vol.affine)
            del vol
        t_shape, t_affine = grids[target]
        for contrast, (shape, affine) in grids.items():
            if contrast == target or same_grid(shape, affine, t_shape, t_affine):
                continue
            frac = fov_overlap(shape, affine, t_shape, t_affine)
            if frac < MIN_OVERLAP:
                raise InputError(
                    f"{chosen[contrast].path} and {chosen[target].path}: the images do not "
                    f"overlap in world space (the first covers {frac:.0%} of the second's field "
                    f"of view; at least {MIN_OVERLAP:.0%} is needed); check their affines"
                )


def ingest_dataset(
    kind: str,
    src: Path,
    out_dir: Path,
    target: str | None = None,
    contrasts: list[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    shape_multiple: int = 1,
) -> IngestReport:
    """Ingest the ``kind`` (``ixi``, ``brats``, ``bids``) tree ``src`` into ``out_dir``.

    ``target``: the contrast whose grid every other contrast of a subject is resampled onto
    (default T2w). ``contrasts``: the contrasts a subject must have to be kept (default:
    the target plus every contrast found in the tree; the target is always added).
    Splits: by person, ``seed``-ed, with
    :func:`~crfm_bench.data.manifest.split_counts` (``val_fraction``, ``test_fraction``).

    ``out_dir`` is replaced whole and atomically (see the module docstring for the steps).
    Raises :class:`InputError` / :class:`MissingInputError` with one line naming the file or
    option: unknown kind or contrast, missing or empty ``src``, no complete subject, too
    few subjects to split, an unreadable/4D/NaN/empty file, or contrasts that do not
    overlap in world space. Nothing is written when it raises.
    """
    src, out_dir = Path(src), Path(out_dir)
    target = _check_contrast(target or DEFAULT_TARGET, "target")
    for c in contrasts or ():
        _check_contrast(c, "contrast")
    _check_fractions(val_fraction, test_fraction)
    scan = scan_source(kind, src)
    out_abs, src_abs = out_dir.resolve(), src.resolve()
    if out_abs == src_abs or src_abs.is_relative_to(out_abs):
        raise InputError(f"output directory {out_dir}: would replace the dataset folder {src}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output directory {out_dir}: exists and is not a directory")

    seen = {f.contrast for f in scan.files}
    wanted = set(contrasts) if contrasts else seen
    needed = tuple(c for c in CONTRASTS if c == target or c in wanted)
    subjects, skipped, duplicates = _select(scan.files, needed)
    if not subjects:
        counts = {c: len({f.subject for f in scan.files if f.contrast == c}) for c in CONTRASTS}
        found = ", ".join(f"{c} in {n}" for c, n in counts.items() if n) or "none"
        raise InputError(
            f"{src}: no subject has all of {', '.join(needed)} (subjects with each contrast: "
            f"{found}); choose the target and contrasts among those"
        )

    group_of = {s: next(iter(chosen.values())).group for s, chosen in subjects.items()}
    groups = sorted(set(group_of.values()))
    by_group = assign_splits(groups, *split_counts(len(groups), val_fraction, test_fraction), seed)
    split_of = {s: by_group[g] for s, g in group_of.items()}

    _validate(subjects, target)

    report = IngestReport(
        kind=kind,
        src=src,
        out_dir=out_dir,
        target=target,
        contrasts=needed,
        subjects=sorted(subjects),
        skipped=skipped,
        duplicates=sorted(duplicates),
        ignored=sorted(scan.ignored),
        splits={k: sum(v == k for v in split_of.values()) for k in SPLITS},
    )
    # the settings that shape the data (hashed into the dataset version); never src or out_dir
    recipe = {
        "kind": kind,
        "target": target,
        "contrasts": list(needed),
        "shape_multiple": shape_multiple,
        "resample_order": RESAMPLE_ORDER,
        "grid_atol": GRID_ATOL,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    rows = []
    with atomic_dir(out_dir) as stage:
        for subject in report.subjects:
            chosen = subjects[subject]
            ref = load_volume(chosen[target].path)
            for contrast in needed:
                vol = ref if contrast == target else load_volume(chosen[contrast].path)
                data, resampled = vol.data, False
                if not same_grid(data.shape, vol.affine, ref.data.shape, ref.affine):
                    data = resample_to_grid(data, vol.affine, ref.data.shape, ref.affine)
                    resampled = True
                    report.resampled.append((subject, contrast))
                data = pad_to_multiple(data, shape_multiple)
                rows.append(
                    save_hr_entry(
                        stage,
                        subject,
                        contrast,
                        data,
                        ref.affine,
                        ref.spacing,
                        split=split_of[subject],
                        source=kind,
                        resampled=resampled,
                        origin=str(chosen[contrast].path.absolute()),
                        recipe=recipe,
                    )
                )
        write_manifest(pd.DataFrame(rows), stage / "manifest.csv")
        write_fingerprint(stage)
    return report
