"""BraTS layouts: 2020 (and 2021) and 2023+ naming.

* 2020: ``BraTS20_{Training|Validation}_NNN/BraTS20_Training_NNN_{t1,t1ce,t2,flair,seg}.nii.gz``
* 2021: ``BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz``
* 2023+: ``BraTS-GLI-NNNNN-NNN/BraTS-GLI-NNNNN-NNN-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (also the
  MEN, MET, PED and SSA challenges); the last three digits are the time point, so
  ``BraTS-GLI-00002-000`` and ``-001`` are one patient and share a split.

t1/t1n -> T1w, t1ce/t1c -> T1ce, t2/t2w -> T2w, flair/t2f -> FLAIR; segmentations are not
used. BraTS images are co-registered, skull-stripped and 1 mm (240x240x155), so no
resampling is expected (Menze et al., IEEE TMI 2015; Baid et al., arXiv:2107.02314).
"""

from __future__ import annotations

import re
from pathlib import Path

from crfm_bench.data.sources import Scan, SourceFile, nifti_files

OLD = re.compile(
    r"^(BraTS20_(?:Training|Validation)_\d{3}|BraTS2021_\d{5})_(t1|t1ce|t2|flair|seg)\.nii(?:\.gz)?$"
)
NEW = re.compile(r"^((BraTS-[A-Z]+-\d{5})-\d{3})-(t1n|t1c|t2w|t2f|seg)\.nii(?:\.gz)?$")
CONTRASTS = {
    "t1": "T1w",
    "t1n": "T1w",
    "t1ce": "T1ce",
    "t1c": "T1ce",
    "t2": "T2w",
    "t2w": "T2w",
    "flair": "FLAIR",
    "t2f": "FLAIR",
}


def scan(root: Path) -> Scan:
    """Find the BraTS images under ``root`` (2020/2021 and 2023+ names may be mixed)."""
    files, ignored = [], []
    for path in nifti_files(root):
        if match := OLD.match(path.name):
            subject, code = match.groups()
            group = subject
        elif match := NEW.match(path.name):
            subject, group, code = match.groups()
        else:
            if path.name.startswith("BraTS"):
                ignored.append(path)
            continue
        if code in CONTRASTS:
            files.append(SourceFile(subject, CONTRASTS[code], path, group))
    return Scan(files, ignored)
