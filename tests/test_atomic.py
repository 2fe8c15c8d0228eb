"""Write-then-rename: complete outputs with the usual modes, nothing half-written on failure."""

from __future__ import annotations

import os
import stat

import pytest

from crfm_bench.atomic import atomic_dir, atomic_path, atomic_write_text


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as stage:
            (stage / "f").write_text("y")
    finally:
        os.umask(old)
    assert mode(f) == 0o644
    assert mode(tmp_path / "d") == 0o755


def test_failure_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "vol.nii.gz"
    dest.write_text("good")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == dest.parent
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert dest.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.nii.gz"]


def test_directory_is_swapped_whole_or_not_at_all(tmp_path):
    out = tmp_path / "lr"
    with atomic_dir(out) as stage:
        (stage / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as stage:
        (stage / "b").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    with atomic_dir(out) as stage:
        (stage / "c").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr"]
