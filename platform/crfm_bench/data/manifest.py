"""Manifests: the tables that version a dataset and link LR files to their HR sources.

The HR manifest (``<data>/hr/manifest.csv``) has one row per (subject, contrast):

============  ==========================================================
subject       subject id (``sub-000``, ``IXI012-HH-1211``, ...)
contrast      T1w, T2w, PDw or FLAIR
path          file path relative to the manifest's folder
shape         ``X,Y,Z`` voxels
spacing       ``dx,dy,dz`` mm
sha256        of the file's bytes (integrity check; depends on the compressor)
split         train, val or test (by subject, deterministic)
source        synthetic, ixi, brats or bids
resampled     True when the volume was brought onto another contrast's grid
data_sha256   of the voxel data as little-endian float32, C order (:func:`voxel_sha256`)
affine        the voxel-to-world affine's top three rows as stored (:func:`fmt_affine`)
recipe        JSON of the synth/ingest settings that shape the data (no paths)
origin        provenance only: the original file (ingest) or the recipe (synthetic)
============  ==========================================================

Degradation manifests (``<data>/lr/<domain>-<scale>/manifest.csv``) add ``domain``,
``scale``, ``hr_path``, ``lr_path`` and every parameter and seed of the operator.

Dataset versions are content addresses (:func:`manifest_version`): a hash of what the data
*is* (per volume its voxel sha256, shape, spacing, affine and split, plus the settings that
made it), never of where it lies, who made it or when. The same data ingested through two
paths, or on two machines, has one version; one changed voxel or split gives another.
"""

from __future__ import annotations

import hashlib
import json
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
    "data_sha256",
    "affine",
    "recipe",
    "origin",
)
# what every HR manifest has had since the first release (older ones lack the content columns)
HR_REQUIRED = (
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
# the fields a version hashes, per row (HR and LR manifests); never paths or provenance
HR_VERSION_FIELDS = (
    "subject",
    "contrast",
    "shape",
    "spacing",
    "affine",
    "data_sha256",
    "split",
    "source",
    "resampled",
    "recipe",
)
LR_VERSION_FIELDS = (
    "subject",
    "contrast",
    "split",
    "domain",
    "scale",
    "lr_shape",
    "lr_spacing",
    "affine",
    "data_sha256",
    "zf_data_sha256",
    "hr_data_sha256",
    "seed",
    "params",
)
VERSION_SCHEMA = "crfm-bench/content-version/1"
SPLITS = ("train", "val", "test")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def voxel_sha256(data: np.ndarray) -> str:
    """Hex sha256 of voxel data as little-endian float32 in C order (what crfm-bench writes).

    Independent of the file's compression, header padding or name, unlike the file's sha256.
    """
    arr = np.ascontiguousarray(np.asarray(data, dtype="<f4"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def fmt_affine(affine: np.ndarray) -> str:
    """The top three rows of a voxel-to-world affine as 12 numbers, ``"a,b,...,l"``.

    Values are taken at the float32 precision a NIfTI header stores (so an affine before
    saving and the same affine read back give one string) and written to 1e-5 mm.
    """
    a = np.asarray(affine, dtype=np.float32).astype(np.float64)[:3].reshape(-1)
    return ",".join(f"{round(float(v), 5) + 0.0:.5f}" for v in a)


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
    recipe: dict,
) -> dict:
    """Save ``<subject>_<contrast>.nii.gz`` in ``folder``; return its HR manifest row.

    ``recipe``: the settings that shaped the data (hashed into the version; no paths);
    ``origin``: provenance (kept in the manifest, outside the version).
    """
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
        "data_sha256": voxel_sha256(data),
        "affine": fmt_affine(affine),
        "recipe": json.dumps(recipe, sort_keys=True, separators=(",", ":")),
        "origin": origin,
    }


def read_manifest(path: str | Path, required: Sequence[str] = HR_REQUIRED) -> pd.DataFrame:
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


def _blank(value: str) -> bool:
    return value.strip() in ("", "nan", "NaN")


def _fill_content(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Voxel sha256 and affine of rows that lack them (manifests written before content
    versions), read from the files; LR rows also get their HR source's voxel sha256."""
    from crfm_bench.data.volume import load_volume

    lr = "domain" in df.columns
    df = df.copy()
    for col in ("data_sha256", "affine", *(("zf_data_sha256", "hr_data_sha256") if lr else ())):
        if col not in df.columns:
            df[col] = ""
    for i, row in df.iterrows():
        if _blank(row["data_sha256"]) or _blank(row["affine"]):
            vol = load_volume(resolve(path, row["lr_path" if lr else "path"]))
            df.at[i, "data_sha256"] = voxel_sha256(vol.data)
            df.at[i, "affine"] = fmt_affine(vol.affine)
        if lr and _blank(row["hr_data_sha256"]):
            df.at[i, "hr_data_sha256"] = voxel_sha256(load_volume(resolve(path, row["hr_path"])).data)
        if lr and _blank(row["zf_data_sha256"]) and not _blank(row.get("zf_path", "")):
            df.at[i, "zf_data_sha256"] = voxel_sha256(load_volume(resolve(path, row["zf_path"])).data)
    return df


def content_version(path: str | Path) -> str:
    """Full hex content address of the HR or LR manifest at ``path`` (see the module doc).

    sha256 of a canonical JSON of :data:`HR_VERSION_FIELDS` (or :data:`LR_VERSION_FIELDS`
    for a degradation manifest, recognised by its ``domain`` column) of every row, sorted
    by subject and contrast, as written in the CSV. Paths, file hashes, ``origin`` and
    anything else in the manifest are left out. Rows of manifests written before these
    columns existed are completed from the files (:func:`_fill_content`).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: manifest not found (build the dataset first)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable manifest ({exc})") from None
    lr = "domain" in df.columns
    fields = LR_VERSION_FIELDS if lr else HR_VERSION_FIELDS
    df = _fill_content(df, path)
    for col in fields:
        if col not in df.columns:
            df[col] = ""
    rows = sorted(
        ([str(r[c]) for c in fields] for _, r in df.iterrows()), key=lambda r: (r[0], r[1])
    )
    doc = {"schema": VERSION_SCHEMA, "kind": "lr" if lr else "hr", "fields": fields, "rows": rows}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_version(path: str | Path) -> str:
    """Short dataset (or LR) version: the first 12 hex digits of :func:`content_version`."""
    return content_version(path)[:12]
