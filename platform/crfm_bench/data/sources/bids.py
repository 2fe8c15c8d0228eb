"""BIDS layout (Gorgolewski et al., Sci Data 2016; https://bids-specification.readthedocs.io).

``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>.nii[.gz]``
with suffix T1w, T2w, PDw or FLAIR. The subject id is ``sub-<label>`` or
``sub-<label>_ses-<label>``; sessions of one participant share a split. Only the raw
``sub-*`` folders of the root are read (not ``derivatives/`` or ``sourcedata/``).

Entities: a T1w with a ``ce-<agent>`` entity is contrast-enhanced and becomes T1ce;
non-magnitude parts (``part-phase|real|imag``) are not used; when several files remain for
one (subject, contrast), e.g. ``run-1`` and ``run-2``, the one with the fewest entities,
then the first by name, is used and the rest are reported as duplicates.
"""

from __future__ import annotations

import re
from pathlib import Path

from crfm_bench.data.sources import Scan, SourceFile, is_nifti

PATTERN = re.compile(
    r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?((?:_[a-z]+-[A-Za-z0-9]+)*)"
    r"_(T1w|T2w|PDw|FLAIR)\.nii(?:\.gz)?$"
)
ENTITY = re.compile(r"_([a-z]+)-([A-Za-z0-9]+)")


def _anat_dirs(root: Path) -> list[tuple[Path, str, str | None]]:
    out = []
    for sub in sorted(root.glob("sub-*")):
        if not sub.is_dir():
            continue
        if (sub / "anat").is_dir():
            out.append((sub / "anat", sub.name, None))
        for ses in sorted(sub.glob("ses-*")):
            if (ses / "anat").is_dir():
                out.append((ses / "anat", sub.name, ses.name))
    return out


def scan(root: Path) -> Scan:
    """Find the anatomical BIDS images under ``root``."""
    files, ignored = [], []
    for anat, sub, ses in _anat_dirs(root):
        for path in sorted(p for p in anat.iterdir() if p.is_file() and is_nifti(p)):
            match = PATTERN.match(path.name)
            if match is None:
                continue  # other suffixes (T2starw, angio, ...) are not contrasts we use
            f_sub, f_ses, entities, suffix = match.groups()
            if f_sub != sub or f_ses != ses:
                ignored.append(path)  # the name disagrees with its folder
                continue
            pairs = dict(ENTITY.findall(entities))
            if pairs.get("part", "mag") != "mag":
                continue
            contrast = "T1ce" if suffix == "T1w" and "ce" in pairs else suffix
            subject = sub if ses is None else f"{sub}_{ses}"
            files.append(SourceFile(subject, contrast, path, sub, rank=len(pairs)))
    return Scan(files, ignored)
