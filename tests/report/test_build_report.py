"""``build_report`` on a real tiny benchmark run: files, self-containment, ranking, stats, figures."""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from crfm_bench.engine.data import load_cases
from crfm_bench.errors import InputError, MissingInputError
from crfm_bench.metrics import foreground_mask, metric_spec_hash
from crfm_bench.report.build import build_report

MODELS = ("tricubic", "trilinear", "zerofill")  # as run by conftest.bench_dir


def metrics_of(runs_dir, model: str) -> dict:
    return json.loads((runs_dir / "models" / model / "metrics.json").read_text())


def leaderboard_models(md: str) -> list[str]:
    """Model column of the Markdown leaderboard, in row order."""
    section = md.split("## Leaderboard", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    return [row.split("|")[2].strip() for row in rows]


def test_report_files_exist(built):
    params, html_path = built
    reports = params.paths.reports_dir
    assert html_path == reports / "index.html"
    for name in ("index.md", "index.html", "significance.csv", "figures/slices.json"):
        assert (reports / name).is_file(), name
    pngs = sorted(p.name for p in (reports / "figures").glob("*.png"))
    assert pngs == sorted(
        ["metrics_bar.png", "metrics_box.png", *(f"slices_{m}.png" for m in MODELS)]
    )
    md = (reports / "index.md").read_text()
    assert "No ranked model was trained" in md  # classical models only: no curves figure
    assert "T2w ← PDw" in md and "kspace" in md


def test_html_is_self_contained(built):
    params, html_path = built
    text = html_path.read_text()
    assert not re.search(r"https?://", text)
    assert "<link" not in text and "<script" not in text and 'src="figures/' not in text
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    md = (params.paths.reports_dir / "index.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(uris) == len(linked) == 2 + len(MODELS)
    for uri, rel in zip(uris, linked, strict=True):  # the same images, in the same order
        assert base64.b64decode(uri) == (params.paths.reports_dir / rel).read_bytes()


def test_leaderboard_order_follows_metrics_json_psnr(built):
    params, html_path = built
    psnr = {m: metrics_of(params.paths.runs_dir, m)["test_psnr_mean"] for m in MODELS}
    expected = sorted(psnr, key=psnr.get, reverse=True)
    md = (params.paths.reports_dir / "index.md").read_text()
    assert leaderboard_models(md) == expected
    best = psnr[expected[0]]
    assert f"{best:.2f} ±" in md
    # the HTML table lists the models in the same order
    html_text = html_path.read_text()
    positions = [html_text.index(f"<td>{m}</td>") for m in expected]
    assert positions == sorted(positions)


def test_significance_matches_scipy_on_the_per_subject_files(built):
    params, _ = built
    sig = pd.read_csv(params.paths.reports_dir / "significance.csv")
    runs = params.paths.runs_dir / "models"
    per = {m: pd.read_csv(runs / m / "per_subject.csv").set_index("subject") for m in MODELS}
    best = max(MODELS, key=lambda m: per[m]["psnr"].mean())
    assert set(sig["best"]) == {best}
    assert len(sig) == 2 * (len(MODELS) - 1)
    for row in sig.itertuples():
        a, b = per[best][row.metric], per[row.model][row.metric].reindex(per[best].index)
        assert row.p_value == pytest.approx(sps.wilcoxon(a, b, alternative="two-sided").pvalue)
        assert row.mean_diff == pytest.approx((a - b).mean())
        assert row.ci_low <= row.mean_diff <= row.ci_high
        assert row.n == 3 and row.p_floor == pytest.approx(0.25)
        assert "p cannot go below 0.25" in row.note
        assert row.p_value >= 0.25  # three subjects never give significance
    md = (params.paths.reports_dir / "index.md").read_text()
    assert "no difference can be significant" in md


def test_report_is_deterministic(built, bench_copy):
    params, _ = built
    build_report(bench_copy)
    for name in ("significance.csv", "index.md"):
        assert (bench_copy.paths.reports_dir / name).read_bytes() == (
            params.paths.reports_dir / name
        ).read_bytes(), name


def test_slice_figures_share_subject_slices_and_colour_scale(built):
    params, _ = built
    shared = json.loads((params.paths.reports_dir / "figures" / "slices.json").read_text())
    assert shared["figures"] == {m: f"slices_{m}.png" for m in MODELS}
    case = load_cases(params, ("test",), need_reference=False)[0]  # first test subject
    assert shared["subject"] == case.subject
    hr = (case.hr * case.divisor).astype(np.float32)
    mask = foreground_mask(hr)
    assert shared["vmax"] == pytest.approx(np.percentile(hr[mask].astype(np.float64), 99.5))
    assert shared["err_vmax"] == pytest.approx(shared["vmax"] / 4)
    centre = np.argwhere(mask).mean(axis=0)
    assert shared["index"] == [round(float(c)) for c in centre]
    md = (params.paths.reports_dir / "index.md").read_text()
    assert f"0 to {shared['vmax']:.4g}" in md


def test_model_with_another_metric_contract_is_excluded(bench_copy):
    meta_file = bench_copy.paths.runs_dir / "models" / "zerofill" / "metrics.json"
    meta = json.loads(meta_file.read_text())
    meta["metric_spec_hash"] = "000000000000"
    meta_file.write_text(json.dumps(meta))
    build_report(bench_copy)
    reports = bench_copy.paths.reports_dir
    md = (reports / "index.md").read_text()
    assert "zerofill" not in leaderboard_models(md)
    assert sorted(leaderboard_models(md)) == ["tricubic", "trilinear"]
    assert (
        f"| zerofill | metric contract 000000000000 differs from the current {metric_spec_hash()}"
        in md
    )
    assert not (reports / "figures" / "slices_zerofill.png").exists()
    assert set(pd.read_csv(reports / "significance.csv")["model"]) == {"trilinear"}


def test_model_from_another_dataset_version_is_excluded(bench_copy):
    meta_file = bench_copy.paths.runs_dir / "models" / "trilinear" / "metrics.json"
    meta = json.loads(meta_file.read_text())
    meta["dataset_version"] = "feedfacecafe"
    meta_file.write_text(json.dumps(meta))
    build_report(bench_copy)
    md = (bench_copy.paths.reports_dir / "index.md").read_text()
    assert "trilinear" not in leaderboard_models(md)
    assert "dataset version feedfacecafe differs" in md


def test_model_of_another_setting_is_excluded_from_report_and_leaderboard(bench_copy):
    # model folders are named by model only: a result left from another scale must not be
    # ranked with the current setting's, by the report or by `leaderboard --from-outputs`
    from crfm_bench.report.leaderboard import from_model_dirs

    meta_file = bench_copy.paths.runs_dir / "models" / "zerofill" / "metrics.json"
    meta = json.loads(meta_file.read_text())
    meta["task"] = {**meta["task"], "scale": "4"}
    meta_file.write_text(json.dumps(meta))
    build_report(bench_copy)
    md = (bench_copy.paths.reports_dir / "index.md").read_text()
    assert sorted(leaderboard_models(md)) == ["tricubic", "trilinear"]
    assert "| zerofill | setting " in md
    board = from_model_dirs(
        bench_copy.paths.runs_dir / "models",
        metric_spec_hash(),
        task=bench_copy.task.model_dump(mode="json"),
    )
    assert sorted(board["model"]) == ["tricubic", "trilinear"]


def test_no_models_is_an_input_error_naming_the_folder(bench_copy):
    models_dir = bench_copy.paths.runs_dir / "models"
    shutil.rmtree(models_dir)
    models_dir.mkdir()
    with pytest.raises(InputError, match=re.escape(str(models_dir))):
        build_report(bench_copy)
    shutil.rmtree(models_dir)
    with pytest.raises(InputError, match=re.escape(str(models_dir))):
        build_report(bench_copy)


def test_all_models_excluded_is_an_input_error(bench_copy):
    for m in MODELS:
        f = bench_copy.paths.runs_dir / "models" / m / "metrics.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "metric_spec_hash": "x"}))
    with pytest.raises(InputError, match="no model to rank"):
        build_report(bench_copy)


def test_missing_per_subject_file_is_named(bench_copy):
    missing = bench_copy.paths.runs_dir / "models" / "tricubic" / "per_subject.csv"
    missing.unlink()
    with pytest.raises(MissingInputError, match=re.escape(str(missing))):
        build_report(bench_copy)
