"""``benchmarks/engine.py --quick`` end to end: real data, real Ray Train, real sliding window.

The script's figures are timings and are not asserted; what is asserted is that both sides
of each comparison did the same work (step counts, the same training loss from the same
seed and patches) and that the sliding window really split the volume.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "engine.py"


@pytest.mark.slow
def test_quick_run_compares_like_with_like(tmp_path):
    out = tmp_path / "results.json"
    args = ["--quick", "--models", "crfm", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())

    train = results["training"]["crfm"]
    plain, ray = train["plain"], train["ray"]
    epochs, steps = results["settings"]["epochs"], train["steps_per_epoch"]
    assert plain["steps"] == ray["steps"] == epochs * steps
    assert plain["threads"] == 1
    # same model seed, patches, schedule and clipping: the same loss, whichever runs it
    assert ray["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)
    assert ray["val_psnr"] == pytest.approx(plain["val_psnr"], abs=1e-3)
    assert ray["wall_seconds"] > ray["train_seconds"] > 0
    assert plain["wall_seconds"] > plain["loop_seconds"] >= plain["train_seconds"] > 0
    assert ray["loop_cpu_seconds"] > 0 and plain["loop_cpu_seconds"] > 0  # NaN fails too

    inf = results["inference"]["crfm"]
    assert inf["hr_shape"] == [2 * n for n in inf["lr_shape"]]
    assert inf["full_calls"] == 1 and inf["sliding_calls"] > 1
    # memory bounded by the window: a batch of LR windows and their HR reference windows
    window, batch = results["settings"]["window"], results["settings"]["eval_batch"]
    assert inf["sliding_peak_input_bytes"] <= batch * ((window // 2) ** 3 + window**3) * 4
    assert inf["full_peak_input_bytes"] == 4 * (
        math.prod(inf["lr_shape"]) + math.prod(inf["hr_shape"])
    )
    assert inf["sliding_work"] > 1  # overlapping windows feed more voxels than the volume
    assert inf["agreement_psnr_db"] > 30  # blended windows reproduce the single pass

    assert "| crfm |" in proc.stdout and "load average at start" in proc.stdout
