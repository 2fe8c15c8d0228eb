"""IXI layout (https://brain-development.org/ixi-dataset/, CC BY-SA 3.0).

Files ``IXI{NNN}-{Guys|HH|IOP}-{NNNN}-{T1|T2|PD|MRA}.nii.gz`` anywhere under the root (flat,
or one folder per contrast as the IXI tarballs extract). The subject id is
``IXI{NNN}-{site}-{NNNN}``. T1 -> T1w, T2 -> T2w, PD -> PDw; MRA is not used. T2 and PD
come from one dual-echo acquisition and share a grid; T1 is a separate acquisition on
another grid, so it is resampled by the affines at ingest.
"""

from __future__ import annotations

import re
from pathlib import Path

from crfm_bench.data.sources import Scan, SourceFile, nifti_files

PATTERN = re.compile(r"^(IXI\d{3}-(?:Guys|HH|IOP)-\d{4})-(T1|T2|PD|MRA)\.nii(?:\.gz)?$")
CONTRASTS = {"T1": "T1w", "T2": "T2w", "PD": "PDw"}


def scan(root: Path) -> Scan:
    """Find the IXI images under ``root``."""
    files, ignored = [], []
    for path in nifti_files(root):
        match = PATTERN.match(path.name)
        if match is None:
            if path.name.startswith("IXI"):
                ignored.append(path)
            continue
        subject, code = match.groups()
        if code in CONTRASTS:
            files.append(SourceFile(subject, CONTRASTS[code], path, subject))
    return Scan(files, ignored)
