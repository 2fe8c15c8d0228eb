"""``crfm-bench models list`` shows each model as the benchmark configures it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXE = Path(sys.executable).with_name("crfm-bench")


def models_list(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [str(EXE), "models", "list", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_models_list_shows_params_residual_loss_and_reference(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(
        "benchmark:\n  residual: none\nmodels:\n  minet:\n    options: {residual: tricubic}\n"
    )
    res = models_list(tmp_path, "*i*et")  # minet
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if "minet" in line)
    assert "183,653" in row and "tricubic" in row and " L1 " in row
    res = models_list(tmp_path, "edsr")
    row = next(line for line in res.stdout.splitlines() if "│ edsr" in line)
    assert "none" in row and "174,081" in row and "4,540,417" in row  # tiny and paper


def test_models_list_names_a_bad_override(tmp_path: Path) -> None:
    res = models_list(tmp_path, "-S", "benchmark.residual=cubic")
    assert res.returncode == 2
    assert "benchmark.residual" in res.stderr + res.stdout
