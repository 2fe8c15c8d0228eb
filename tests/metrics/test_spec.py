"""metric_spec and metric_spec_hash: the contract's record and its stable short hash."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from importlib.metadata import version
from typing import Any

import pytest

from crfm_bench.errors import InputError
from crfm_bench.metrics import CONTRACT_VERSION, metric_spec, metric_spec_hash


def test_spec_records_the_contract():
    spec = metric_spec()
    assert spec["contract"] == CONTRACT_VERSION
    assert spec["normalisation"]["percentile"] == 99.5
    assert spec["normalisation"]["clip"] == [0.0, 1.0]
    assert spec["data_range"] == 1.0
    assert spec["ssim"]["sigma"] == 1.5
    assert spec["ssim"]["kernel_size"] == 11
    assert spec["ssim"]["dims"] == 3
    assert spec["mask"]["percentile"] == 99.0
    assert spec["mask"]["fraction"] == 0.1
    assert spec["slice_axis"] == 2
    assert spec["torchmetrics_version"] == version("torchmetrics")
    assert json.loads(json.dumps(spec)) == spec  # plain JSON values only


def test_hash_is_sha256_of_canonical_json():
    spec = metric_spec()
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    digest = metric_spec_hash()
    assert digest == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert len(digest) == 12 and all(c in "0123456789abcdef" for c in digest)


def test_hash_ignores_key_order():
    spec = metric_spec()
    reordered = {k: spec[k] for k in reversed(list(spec))}
    assert metric_spec_hash(reordered) == metric_spec_hash(spec)


def test_hash_is_stable_across_processes():
    code = "from crfm_bench.metrics import metric_spec_hash; print(metric_spec_hash())"
    hashes = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        hashes.add(out.stdout.strip())
    assert hashes == {metric_spec_hash()}


def _leaves(tree: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*path, k))]
    return [path]


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, 0]
    raise AssertionError(f"unexpected spec value {value!r}")


def test_hash_changes_when_any_field_changes():
    spec = metric_spec()
    paths = _leaves(spec)
    assert len(paths) > 20
    seen = {metric_spec_hash(spec)}
    for path in paths:
        changed = copy.deepcopy(spec)
        node = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = _changed(node[path[-1]])
        seen.add(metric_spec_hash(changed))
    assert len(seen) == len(paths) + 1


def test_slice_axis_is_part_of_the_contract():
    assert metric_spec(slice_axis=0)["slice_axis"] == 0
    assert metric_spec_hash(metric_spec(slice_axis=0)) != metric_spec_hash()
    with pytest.raises(InputError, match="slice_axis"):
        metric_spec(slice_axis=3)
