"""Dataset layouts: find the (subject, contrast, file) triples of a real dataset tree.

One module per layout (:mod:`.ixi`, :mod:`.brats`, :mod:`.bids`), each with a
``scan(root) -> Scan`` that reads file *names* only (no image is opened here). Contrasts
are mapped onto the project's names (T1w, T2w, PDw, FLAIR, T1ce); files a layout does not
use (IXI MRA, BraTS segmentations) are dropped, and NIfTI files that look like the layout
but do not match it are listed in ``Scan.ignored`` so the ingest report can mention them.

Subjects are keyed by the dataset's own id, never by file order, so contrasts are paired
by subject id. ``group`` is the person a scan belongs to: sessions (BIDS) or time points
(BraTS 2023) of one person share a group, and splits are drawn by group so that one
person never ends up in both training and test data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from crfm_bench.errors import InputError, MissingInputError


class SourceFile(NamedTuple):
    """One image of a real dataset.

    ``subject``: manifest id (``IXI012-HH-1211``, ``BraTS20_Training_001``, ``sub-01_ses-1``);
    ``contrast``: T1w, T2w, PDw, FLAIR or T1ce; ``path``: the file; ``group``: the person
    (split unit); ``rank``: preference when a layout holds several files for one
    (subject, contrast), lower first (e.g. BIDS files without ``run-``/``acq-`` entities).
    """

    subject: str
    contrast: str
    path: Path
    group: str
    rank: int = 0


class Scan(NamedTuple):
    """What a layout scanner found: usable ``files`` and unrecognised NIfTI ``ignored``."""

    files: list[SourceFile]
    ignored: list[Path]


def is_nifti(path: Path) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` file names (not hidden ``._`` or ``.`` files)."""
    name = path.name
    return not name.startswith(".") and (name.endswith(".nii") or name.endswith(".nii.gz"))


def nifti_files(root: Path) -> list[Path]:
    """Every NIfTI file under ``root`` (recursively, hidden folders skipped), sorted."""
    out = []
    for path in root.rglob("*.nii*"):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not is_nifti(path) or not path.is_file():
            continue
        out.append(path)
    return sorted(out)


def _scanners() -> dict[str, Callable[[Path], Scan]]:
    from crfm_bench.data.sources import bids, brats, ixi

    return {"ixi": ixi.scan, "brats": brats.scan, "bids": bids.scan}


KINDS = ("ixi", "brats", "bids")


def scan_source(kind: str, root: str | Path) -> Scan:
    """Scan the dataset tree ``root`` with the layout ``kind`` (``ixi``, ``brats`` or ``bids``).

    Raises :class:`InputError` for an unknown kind, :class:`MissingInputError` if ``root``
    does not exist, and :class:`InputError` if it is not a folder or holds no file of the
    layout.
    """
    scanners = _scanners()
    if kind not in scanners:
        raise InputError(
            f"dataset kind '{kind}': unknown; use {', '.join(KINDS[:-1])} or {KINDS[-1]}"
        )
    root = Path(root)
    if not root.exists():
        raise MissingInputError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (give the root folder of the {kind} dataset)")
    scan = scanners[kind](root)
    if not scan.files:
        raise InputError(f"{root}: no {kind} images found (expected names like {EXAMPLES[kind]})")
    return scan


EXAMPLES = {
    "ixi": "IXI012-HH-1211-T2.nii.gz",
    "brats": "BraTS20_Training_001/BraTS20_Training_001_t2.nii.gz or "
    "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2w.nii.gz",
    "bids": "sub-01/[ses-1/]anat/sub-01[_ses-1]_T2w.nii.gz",
}
