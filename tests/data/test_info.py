"""``dvc_hash``: the md5 DVC recorded for the HR folder, found however data_dir is spelled."""

from __future__ import annotations

from pathlib import Path

import yaml

from crfm_bench.data.info import dvc_hash


def test_dvc_hash_matches_relative_and_absolute_outputs(tmp_path, monkeypatch):
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        yaml.safe_dump(
            {
                "schema": "2.0",
                "stages": {"synthesize": {"outs": [{"path": "data/hr", "md5": "abc.dir"}]}},
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    assert dvc_hash(tmp_path / "data" / "hr") == "abc.dir"  # absolute paths.data_dir
    assert dvc_hash(tmp_path / "data" / "hr", lock=lock) == "abc.dir"
    assert dvc_hash(Path("data") / "hr") == "abc.dir"
    assert dvc_hash(Path("data") / "lr") is None
    assert dvc_hash(Path("data") / "hr", lock=tmp_path / "missing.lock") is None
