"""``crfm-bench data info``: what a dataset version holds, as rich tables."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from crfm_bench.data.manifest import manifest_version, read_manifest


def dvc_hash(out: Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The md5 DVC recorded for output ``out`` in ``lock`` (the project's ``dvc.lock``, in the
    working directory where ``dvc.yaml`` and ``params.yaml`` live), if any. Paths in the lock
    are relative to its folder; ``out`` may be relative to the working directory or absolute.
    """
    if not lock.is_file():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return None
    target = Path(out).resolve()
    for stage in stages.values():
        for o in stage.get("outs", []):
            if (lock.parent / o.get("path", "")).resolve() == target:
                return o.get("md5")
    return None


def dataset_summary(data_dir: str | Path) -> dict:
    """Dataset version, subjects, contrasts, splits and degradations under ``data_dir``."""
    data_dir = Path(data_dir)
    hr = data_dir / "hr" / "manifest.csv"
    manifest = read_manifest(hr)
    fp_path = data_dir / "hr" / "fingerprint.json"
    fingerprint = json.loads(fp_path.read_text()) if fp_path.is_file() else {}
    summary = {
        "data_dir": str(data_dir),
        "version": manifest_version(hr),
        "dvc_md5": dvc_hash(data_dir / "hr"),
        "sources": sorted(manifest["source"].unique().tolist()),
        "subjects": int(manifest["subject"].nunique()),
        "splits": {k: int(v) for k, v in manifest.groupby("split")["subject"].nunique().items()},
        "contrasts": {},
        "degradations": [],
    }
    for contrast, rows in manifest.groupby("contrast"):
        fpc = fingerprint.get("contrasts", {}).get(contrast, {})
        summary["contrasts"][contrast] = {
            "volumes": len(rows),
            "shape": rows["shape"].mode().iloc[0],
            "spacing": rows["spacing"].mode().iloc[0],
            "resampled": int(rows["resampled"].astype(bool).sum()),
            "fg_p99.5": fpc.get("foreground_intensity", {}).get("p99.5"),
        }
    for lr_manifest in sorted((data_dir / "lr").glob("*/manifest.csv")):
        rows = read_manifest(lr_manifest, required=("subject", "contrast", "domain", "scale"))
        summary["degradations"].append(
            {
                "name": lr_manifest.parent.name,
                "domain": str(rows["domain"].iloc[0]) if len(rows) else "?",
                "scale": str(rows["scale"].iloc[0]) if len(rows) else "?",
                "volumes": len(rows),
                "lr_shape": str(rows["lr_shape"].mode().iloc[0])
                if "lr_shape" in rows and len(rows)
                else "",
                "version": manifest_version(lr_manifest),
            }
        )
    return summary


def print_info(data_dir: str | Path, console: Console | None = None) -> dict:
    """Print :func:`dataset_summary` as tables; return the summary."""
    console = console or Console()
    s = dataset_summary(data_dir)
    head = Table(title=f"Dataset {s['data_dir']}", show_header=False)
    head.add_row("version (content hash)", s["version"])
    head.add_row("DVC md5 of data/hr", s["dvc_md5"] or "not recorded (run dvc repro / dvc commit)")
    head.add_row("source", ", ".join(s["sources"]))
    head.add_row("subjects", str(s["subjects"]))
    head.add_row("splits", ", ".join(f"{k} {v}" for k, v in sorted(s["splits"].items())))
    console.print(head)
    ct = Table(title="Contrasts")
    for col in ("contrast", "volumes", "shape", "spacing mm", "resampled", "fg p99.5"):
        ct.add_column(col)
    for name, c in s["contrasts"].items():
        p = c["fg_p99.5"]
        ct.add_row(
            name,
            str(c["volumes"]),
            c["shape"],
            c["spacing"],
            str(c["resampled"]),
            "" if p is None else f"{p:.4g}",
        )
    console.print(ct)
    dt = Table(title="Degradations (LR versions)")
    for col in ("folder", "domain", "scale", "volumes", "LR shape", "version"):
        dt.add_column(col)
    for d in s["degradations"]:
        dt.add_row(
            d["name"], d["domain"], d["scale"], str(d["volumes"]), d["lr_shape"], d["version"]
        )
    if not s["degradations"]:
        dt.caption = "none yet: crfm-bench degrade"
    console.print(dt)
    return s
