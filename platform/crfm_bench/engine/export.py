"""``crfm-bench score --export ZIP``: the test split's inputs for a method run elsewhere.

The zip holds one folder ``crfm-bench-test-<dataset version>-<LR version>/`` with:

* ``lr/<subject>_<target>.nii.gz``: the LR target of each test subject, exactly our file
  (float32, its exact LR affine);
* ``reference/<subject>_<reference>.nii.gz``: the HR reference contrast on the HR grid (only
  when the setting has a reference);
* ``subjects.csv``: per subject the file names, the prediction file name to write, the HR
  grid (shape, spacing, affine as 12 numbers row by row) and the LR grid;
* ``setting.json``: task, scale, the degradation's parameters, dataset and LR versions,
  the metric contract and its hash;
* ``README.md``: what to predict and how to come back with ``crfm-bench score``.

The HR targets of the test split are not in the zip: they are the answer key.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd

from crfm_bench.atomic import atomic_path
from crfm_bench.config import Params
from crfm_bench.data.manifest import manifest_version, read_manifest, resolve
from crfm_bench.engine.data import lr_dir
from crfm_bench.engine.score import ACCEPTED_DTYPES, AFFINE_ATOL, PRED_SUFFIX
from crfm_bench.errors import InputError

README = """# crfm-bench test inputs: {target} <- {reference_text}, {domain} x{scale}

Dataset version `{dataset_version}`, LR version `{lr_version}`, metric contract `{spec_hash}`.
{n} test subjects: {subjects}.

## What to predict
For every subject in `subjects.csv`, the high-resolution **{target}** volume, from
- `lr/<subject>_{target}.nii.gz`: the low-resolution {target} ({domain} degradation,
  scale {scale} per axis; LR voxel m lies at HR voxel m*s in world space, as its affine says){ref_line}

## What to write
One NIfTI file per subject, `<subject>{suffix}` (the `prediction` column of `subjects.csv`),
all in one folder:
- **3D** (no fourth axis), **float32** (float64 also accepted; integer and complex types are
  refused), finite (no NaN/Inf);
- on the **HR grid** of that subject: shape `hr_shape` and the voxel-to-world affine
  `hr_affine` of `subjects.csv` (12 numbers, rows 1-3 of the 4x4 matrix){grid_hint}; the
  affine must match to {atol} mm per entry;
- on the **intensity scale of the LR input** (the same units as the LR file: do not
  normalise to [0, 1]). The metric divides the true HR volume by its brain-foreground 99.5th
  percentile, applies the same divisor to your prediction, and clips both to [0, 1].

Example with nibabel:

```python
import nibabel as nib, numpy as np
ref = nib.load("reference/sub-000_{ref_or_target}.nii.gz")  # or build the affine from subjects.csv
nib.save(nib.Nifti1Image(prediction.astype(np.float32), ref.affine), "preds/sub-000{suffix}")
```

## How to come back
In the crfm-bench project whose data this export came from (same dataset version):

```bash
crfm-bench score preds/ --name my-method --method-params '{{"epochs": 100}}' --url https://...
```

Every file is checked first (missing subject, other grid, NaN, wrong type or 4D: one line
naming the file, exit code 2, nothing logged). The metrics (PSNR, SSIM, brain-masked PSNR
and SSIM, slice-wise SSIM, NMSE: see `setting.json`) are computed exactly as for the
platform's own models; the method appears on the leaderboard and in the report, marked
external, with no training columns.
"""


def export_test_split(params: Params, zip_path: Path) -> Path:
    """Write the test split's inputs for ``params.task`` as ``zip_path`` (atomically)."""
    from crfm_bench.engine.run import ensure_data
    from crfm_bench.metrics import metric_spec, metric_spec_hash

    zip_path = Path(zip_path)
    if zip_path.suffix != ".zip":
        raise InputError(f"--export {zip_path}: give a file name ending in .zip")
    ensure_data(params, progress=False)
    task = params.task
    hr_manifest = params.paths.data_dir / "hr" / "manifest.csv"
    lr_manifest = lr_dir(params) / "manifest.csv"
    hr = read_manifest(hr_manifest)
    lr = read_manifest(lr_manifest, required=("subject", "contrast", "split", "lr_path"))
    lr = lr[(lr["contrast"] == task.target) & (lr["split"] == "test")].sort_values("subject")
    if lr.empty:
        raise InputError(f"{lr_manifest}: no {task.target} volumes in the test split")
    hr_t = hr[hr["contrast"] == task.target].set_index("subject")
    hr_r = hr[hr["contrast"] == task.reference].set_index("subject") if task.reference else None
    version, lr_version = manifest_version(hr_manifest), manifest_version(lr_manifest)
    spec = metric_spec(params.eval.slice_axis)
    spec_hash = metric_spec_hash(spec)
    root = f"crfm-bench-test-{version}-{lr_version}"
    rows = []
    files: list[tuple[Path, str]] = []
    for row in lr.itertuples():
        subject = str(row.subject)
        target = hr_t.loc[subject]
        entry = {
            "subject": subject,
            "lr_file": f"lr/{subject}_{task.target}.nii.gz",
            "reference_file": "",
            "prediction": f"{subject}{PRED_SUFFIX}",
            "hr_shape": target["shape"],
            "hr_spacing": target["spacing"],
            "hr_affine": target.get("affine", ""),
            "lr_shape": getattr(row, "lr_shape", ""),
            "lr_spacing": getattr(row, "lr_spacing", ""),
        }
        files.append((resolve(lr_manifest, row.lr_path), entry["lr_file"]))
        if hr_r is not None:
            entry["reference_file"] = f"reference/{subject}_{task.reference}.nii.gz"
            files.append((resolve(hr_manifest, hr_r.loc[subject, "path"]), entry["reference_file"]))
        rows.append(entry)
    subjects = pd.DataFrame(rows)
    setting = {
        "task": task.model_dump(mode="json"),
        "dataset_version": version,
        "lr_version": lr_version,
        "degradation": json.loads(str(lr["params"].iloc[0])) if "params" in lr else {},
        "metric_spec": spec,
        "metric_spec_hash": spec_hash,
        "prediction": {
            "file": f"<subject>{PRED_SUFFIX}",
            "dtypes": [str(d) for d in ACCEPTED_DTYPES],
            "affine_atol_mm": AFFINE_ATOL,
            "grid": "HR grid of subjects.csv (hr_shape, hr_affine)",
        },
    }
    readme = README.format(
        target=task.target,
        reference_text=task.reference or "no reference",
        domain=task.domain,
        scale=task.scale,
        dataset_version=version,
        lr_version=lr_version,
        spec_hash=spec_hash,
        n=len(subjects),
        subjects=", ".join(subjects["subject"]),
        ref_line=(
            f"\n- `reference/<subject>_{task.reference}.nii.gz`: the high-resolution "
            f"{task.reference} of the same subject, already on the HR grid (the guide of "
            "reference-based methods; methods without a reference may ignore it)"
            if task.reference
            else ""
        ),
        suffix=PRED_SUFFIX,
        grid_hint=(
            f" - the same grid as `reference/<subject>_{task.reference}.nii.gz`"
            if task.reference
            else ""
        ),
        ref_or_target=task.reference or task.target,
        atol=AFFINE_ATOL,
    )
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{root}/README.md", readme)
            zf.writestr(f"{root}/subjects.csv", subjects.to_csv(index=False))
            zf.writestr(f"{root}/setting.json", json.dumps(setting, indent=2, sort_keys=True))
            for src, arc in files:
                zf.write(src, f"{root}/{arc}")
    return zip_path
