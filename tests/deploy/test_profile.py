"""The cluster profile (params/cluster.yaml): the laptop's params.yaml with only the settings
of a cluster changed, so a user moves by configuration alone and the two never drift."""

from __future__ import annotations

from pathlib import Path

import yaml
from dvc_support import flat

from crfm_bench.config import load_params

ROOT = Path(__file__).resolve().parents[2]

# what a cluster changes: where Ray, checkpoints and tracking are, and how work is spread
CLUSTER_KEYS = {
    "ray.address",
    "ray.dashboard",
    "train.storage_path",
    "train.num_workers",
    "train.use_gpu",
    "train.cpus_per_worker",
    "tracking.uri",
    "tracking.artifact_location",
    "degrade.workers",
}


def test_cluster_profile_validates_and_changes_only_cluster_settings():
    laptop = flat(load_params(ROOT / "params.yaml").model_dump(mode="json"))
    cluster = flat(load_params(ROOT / "params" / "cluster.yaml").model_dump(mode="json"))
    changed = {k for k in laptop.keys() | cluster.keys() if laptop.get(k) != cluster.get(k)}
    assert changed <= CLUSTER_KEYS, changed - CLUSTER_KEYS
    assert {"train.storage_path", "tracking.uri"} <= changed
    assert cluster["train.storage_path"].startswith("s3://")
    assert cluster["tracking.uri"].startswith("http")


def test_cluster_profile_holds_no_secret():
    text = (ROOT / "params" / "cluster.yaml").read_text().lower()
    tree = flat(yaml.safe_load(text))
    for key, value in tree.items():
        assert not any(w in key for w in ("password", "secret", "token", "key_id")), key
        assert "@" not in str(value), key  # no credentials inside a URL
