"""The report's setting section shows each model's footing, and its statistics are Holm-corrected."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crfm_bench.models import create_model
from crfm_bench.report.build import MODELS_HEADER, ModelResult, model_rows
from crfm_bench.report.stats import holm_adjust


def setting_section(md: str) -> str:
    return md.split("## Setting", 1)[1].split("\n## ", 1)[0]


def test_setting_section_lists_params_residual_loss_and_reference(built):
    params, _ = built
    section = setting_section((params.paths.reports_dir / "index.md").read_text())
    assert "| " + " | ".join(MODELS_HEADER) + " |" in section
    assert "benchmark.residual = tricubic" in section
    for model in ("tricubic", "trilinear", "zerofill"):
        assert f"| {model} | tiny | 0 | 0 | - | - | no |" in section, section


def test_model_rows_of_learned_models_use_the_configured_residual(bench_copy):
    params = bench_copy
    params.benchmark.residual = "none"
    n = create_model("minet", 3, 2).num_parameters()
    result = ModelResult("minet", params.paths.runs_dir, {"params": n}, pd.DataFrame(), None)
    (row,) = model_rows(params, [result])
    paper = create_model("minet", 3, 2, size="paper").num_parameters()
    assert row == ["minet", "tiny", f"{n:,}", f"{paper:,}", "none", "L1", "yes"]


def test_significance_csv_and_page_carry_holm_corrected_p(built):
    params, _ = built
    sig = pd.read_csv(params.paths.reports_dir / "significance.csv")
    for _, group in sig.groupby("metric"):
        np.testing.assert_allclose(group["p_holm"], holm_adjust(group["p_value"].to_numpy()))
        assert (group["significant"] == (group["p_holm"] < 0.05)).all()
    md = (params.paths.reports_dir / "index.md").read_text()
    assert "p (Holm)" in md and "Holm 1979" in md
