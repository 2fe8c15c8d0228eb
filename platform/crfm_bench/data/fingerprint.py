"""Dataset fingerprint in the manner of nnU-Net: spacings, shapes and foreground intensities.

Written once per dataset (``<hr_dir>/fingerprint.json``) from its manifest and volumes, and
used to plan patch sizes and normalisation, and to show what a dataset version holds.
Foreground voxels follow the metric contract's mask rule
(:func:`crfm_bench.metrics.foreground_mask`), so the same voxels define "brain" everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crfm_bench.atomic import atomic_write_text
from crfm_bench.data.manifest import manifest_version, parse_tuple, read_manifest
from crfm_bench.data.volume import load_volume

PERCENTILES = (0.5, 1.0, 25.0, 50.0, 75.0, 99.0, 99.5)
SAMPLES_PER_VOLUME = 20000


def compute_fingerprint(hr_dir: str | Path, seed: int = 0) -> dict:
    """Fingerprint of the dataset in ``hr_dir`` (reads ``manifest.csv`` and every volume)."""
    from crfm_bench.metrics import foreground_mask

    hr_dir = Path(hr_dir)
    manifest = read_manifest(hr_dir / "manifest.csv")
    rng = np.random.default_rng(seed)
    out: dict = {
        "dataset_version": manifest_version(hr_dir / "manifest.csv"),
        "n_subjects": int(manifest["subject"].nunique()),
        "splits": {k: int(v) for k, v in manifest.groupby("split")["subject"].nunique().items()},
        "contrasts": {},
    }
    for contrast, rows in manifest.groupby("contrast"):
        samples = []
        for rel in rows["path"]:
            vol = load_volume(hr_dir / rel)
            fg = vol.data[foreground_mask(vol.data)]
            take = min(len(fg), SAMPLES_PER_VOLUME)
            samples.append(rng.choice(fg, size=take, replace=False))
        values = np.concatenate(samples).astype(np.float64)
        shapes = np.array([parse_tuple(s, int) for s in rows["shape"]])
        spacings = np.array([parse_tuple(s) for s in rows["spacing"]])
        out["contrasts"][contrast] = {
            "n_volumes": len(rows),
            "shape_median": np.median(shapes, 0).tolist(),
            "shape_min": shapes.min(0).tolist(),
            "shape_max": shapes.max(0).tolist(),
            "spacing_median": np.median(spacings, 0).tolist(),
            "spacing_min": spacings.min(0).tolist(),
            "spacing_max": spacings.max(0).tolist(),
            "foreground_intensity": {
                **{f"p{p:g}": float(np.percentile(values, p)) for p in PERCENTILES},
                "mean": float(values.mean()),
                "std": float(values.std()),
            },
        }
    return out


def write_fingerprint(hr_dir: str | Path) -> Path:
    """Compute and write ``<hr_dir>/fingerprint.json`` atomically; return its path."""
    hr_dir = Path(hr_dir)
    fp = compute_fingerprint(hr_dir)
    return atomic_write_text(
        hr_dir / "fingerprint.json", json.dumps(fp, indent=2, sort_keys=True) + "\n"
    )
