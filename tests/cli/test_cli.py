"""The command line as a user meets it: help, version, bad input as one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("crfm-bench")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_and_version():
    res = run("--help")
    assert res.returncode == 0 and "data" in res.stdout and "degrade" in res.stdout
    res = run("--version")
    assert res.returncode == 0 and res.stdout.startswith("crfm-bench ")
    for cmd in (["data", "synth"], ["data", "ingest"], ["data", "info"], ["degrade"]):
        res = run(*cmd, "--help")
        assert res.returncode == 0 and "Example" in res.stdout, cmd


def test_malformed_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("synth: {n_subjects: 4\n")
    assert_one_line_error(run("data", "synth", cwd=tmp_path), "params.yaml", "malformed YAML")


def test_missing_params_file(tmp_path):
    assert_one_line_error(run("data", "info", "--params", "nope.yaml", cwd=tmp_path), "nope.yaml")


@pytest.mark.parametrize(("value", "needle"), [("0", "0"), ("1.5", "1.5")])
def test_bad_scale_option(tmp_path, value, needle):
    (tmp_path / "params.yaml").write_text("{}\n")
    res = run("degrade", "--scale", value, cwd=tmp_path)
    assert_one_line_error(res, "scale", needle)


def test_bad_override(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    assert_one_line_error(
        run("data", "synth", "-S", "synth.n_subjects=two", cwd=tmp_path), "synth.n_subjects"
    )


def test_unknown_dataset_kind(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "src").mkdir()
    assert_one_line_error(run("data", "ingest", "nifti-zoo", "src", cwd=tmp_path), "nifti-zoo")


def test_output_dir_not_writable_and_earlier_manifest_kept(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "synth: {n_subjects: 3, n_val: 1, n_test: 1, spacing_mm: 6.0, contrasts: [T2w]}\n"
    )
    res = run("data", "synth", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    manifest = tmp_path / "data" / "hr" / "manifest.csv"
    before = manifest.read_bytes()
    # a data dir that cannot be created (its parent is a file): clear error, exit 2
    (tmp_path / "blocker").write_text("a file")
    res = run("data", "synth", "-S", "paths.data_dir=blocker/data", cwd=tmp_path)
    assert_one_line_error(res, "blocker")
    # a failing rerun into the real data dir (bad parameter) leaves the earlier manifest as it was
    res = run("data", "synth", "-S", "synth.spacing_mm=-3", cwd=tmp_path)
    assert res.returncode == 2
    assert manifest.read_bytes() == before
    info = run("data", "info", cwd=tmp_path)
    assert info.returncode == 0 and "T2w" in info.stdout and "synthetic" in info.stdout


def test_leaderboard_builds_no_data_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text("synth: {n_subjects: 4, n_val: 1, n_test: 1}\n")
    res = run("leaderboard", cwd=tmp_path)
    assert_one_line_error(res, "data/hr/manifest.csv", "not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_corrupt_model_result_is_one_line_naming_it(tmp_path):
    (tmp_path / "params.yaml").write_text("synth: {n_subjects: 4, n_val: 1, n_test: 1}\n")
    folder = tmp_path / "runs" / "models" / "edsr"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{not json")
    res = run("leaderboard", "--from-outputs", cwd=tmp_path)
    assert_one_line_error(res, "runs/models/edsr/metrics.json", "not valid JSON")


def test_code_version_is_printed_and_written(tmp_path):
    res = run("code-version", "--out", str(tmp_path / "v.txt"))
    assert res.returncode == 0
    version = res.stdout.strip()
    assert len(version) == 12 and (tmp_path / "v.txt").read_text() == version + "\n"
