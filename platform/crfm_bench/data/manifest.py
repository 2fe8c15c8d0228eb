"""Manifests: the tables that version a dataset and link LR files to their HR sources.

The HR manifest (``<data>/hr/manifest.csv``) has one row per (subject, contrast):

============  ==========================================================
subject       subject id (``sub-000``, ``IXI012-HH-1211``, ...)
contrast      T1w, T2w, PDw or FLAIR
path          file path relative to the manifest's folder
shape         ``X,Y,Z`` voxels
spacing       ``dx,dy,dz`` mm
sha256        of the file's bytes
split         train, val or test (by subject, deterministic)
source        synthetic, ixi, brats or bids
resampled     True when the volume was brought onto another contrast's grid
origin        the original file (ingest) or the recipe (synthetic)
============  ==========================================================

Degradation manifests (``<data>/lr/<domain>-<scale>/manifest.csv``) add ``domain``,
``scale``, ``hr_path``, ``lr_path`` and every parameter and seed of the operator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crfm_bench.atomic import atomic_path
from crfm_bench.errors import InputError, MissingInputError

HR_COLUMNS = (
    "subject",
    "contrast",
    "path",
    "shape",
    "spacing",
    "sha256",
    "split",
    "source",
    "resampled",
    "origin",
)
SPLITS = ("train", "val", "test")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fmt_tuple(values: Iterable[float], digits: int = 4) -> str:
    """``(1.0, 2.5, 3)`` -> ``"1,2.5,3"`` (for shape and spacing columns)."""
    return ",".join(f"{float(v):.{digits}g}" for v in values)


def parse_tuple(text: str, kind: type = float) -> tuple:
    """Inverse of :func:`fmt_tuple`."""
    return tuple(kind(float(v)) for v in str(text).split(","))


def assign_splits(subjects: Sequence[str], n_val: int, n_test: int, seed: int) -> dict[str, str]:
    """Deterministic split by subject: a seeded permutation of the sorted ids.

    The same ids and seed give the same split whatever order the ids come in.
    """
    ids = sorted(set(subjects))
    if n_val + n_test >= len(ids):
        raise InputError(
            f"split: {len(ids)} subjects cannot give {n_val} validation and {n_test} test "
            "subjects and still leave training subjects"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    out: dict[str, str] = {}
    for rank, idx in enumerate(order):
        out[ids[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def split_counts(
    n_subjects: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[int, int]:
    """(n_val, n_test) for a dataset of ``n_subjects``: at least 1 each, fractions rounded."""
    n_val = max(1, round(n_subjects * val_fraction))
    n_test = max(1, round(n_subjects * test_fraction))
    return n_val, n_test


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest CSV atomically (sorted by subject then contrast where present)."""
    keys = [c for c in ("subject", "contrast", "domain", "scale") if c in df.columns]
    if keys:
        df = df.sort_values(keys, kind="stable").reset_index(drop=True)
    with atomic_path(Path(path)) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def save_hr_entry(
    folder: Path,
    subject: str,
    contrast: str,
    data: np.ndarray,
    affine: np.ndarray,
    spacing: Sequence[float],
    *,
    split: str,
    source: str,
    resampled: bool,
    origin: str,
) -> dict:
    """Save ``<subject>_<contrast>.nii.gz`` in ``folder``; return its HR manifest row."""
    from crfm_bench.data.volume import save_volume

    name = f"{subject}_{contrast}.nii.gz"
    save_volume(folder / name, data, affine)
    return {
        "subject": subject,
        "contrast": contrast,
        "path": name,
        "shape": fmt_tuple(data.shape),
        "spacing": fmt_tuple(spacing),
        "sha256": sha256_file(folder / name),
        "split": split,
        "source": source,
        "resampled": resampled,
        "origin": origin,
    }


def read_manifest(path: str | Path, required: Sequence[str] = HR_COLUMNS) -> pd.DataFrame:
    """Read a manifest and check it has the ``required`` columns."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: manifest not found (build the dataset first)")
    try:
        df = pd.read_csv(path, dtype={"subject": str, "scale": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable manifest ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: manifest lacks columns {', '.join(missing)}")
    return df


def resolve(manifest_path: str | Path, relative: str) -> Path:
    """Absolute path of a manifest entry (entries are relative to the manifest's folder)."""
    return (Path(manifest_path).parent / relative).resolve()


def manifest_version(path: str | Path) -> str:
    """Short dataset version: the first 12 hex digits of the manifest file's sha256."""
    return sha256_file(path)[:12]
