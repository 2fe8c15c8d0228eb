"""``crfm-bench score``: external predictions scored under the metric contract.

A tiny embedded dataset (real synthesis, k-space degradation, NIfTI with affines) is
exported; a real method (our registry's tricubic, run outside the platform on the exported
LR files and written with nibabel) is scored; its per-subject PSNR must equal our own
tricubic evaluation of the same subjects. Each kind of bad prediction is refused with one
line naming the file, and nothing is logged or written.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from crfm_bench.config import load_params
from crfm_bench.errors import CrfmBenchError

TINY = {
    "synth": {
        "n_subjects": 6,
        "n_val": 1,
        "n_test": 2,
        "spacing_mm": 4.0,
        "contrasts": ["T2w", "PDw"],
    },
    "degrade": {"domains": ["kspace"], "scales": ["2"]},
    # one window covers the whole volume, so our evaluation and a whole-volume prediction
    # made elsewhere are the same computation
    "eval": {"window": 96},
}


def project_params(root: Path) -> Path:
    tree = {
        **TINY,
        "paths": {
            "data_dir": str(root / "data"),
            "runs_dir": str(root / "runs"),
            "reports_dir": str(root / "reports"),
        },
        "tracking": {
            "uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_location": (root / "mlruns").as_uri(),
        },
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def all_runs(params) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(params.tracking.uri)
    runs = []
    for exp in client.search_experiments():
        runs += client.search_runs([exp.experiment_id])
    return runs


def predict_elsewhere(export_root: Path, out: Path) -> Path:
    """What another lab does: read the exported LR files, run a method, write NIfTI."""
    from crfm_bench.models import create_model

    model = create_model("tricubic", spatial_dims=3, scale=(2, 2, 2)).eval()
    subjects = pd.read_csv(export_root / "subjects.csv")
    out.mkdir(parents=True)
    for row in subjects.itertuples():
        lr = nib.load(str(export_root / row.lr_file))
        ref = nib.load(str(export_root / row.reference_file))
        x = torch.from_numpy(np.asarray(lr.dataobj, dtype=np.float32))[None, None]
        with torch.no_grad():
            sr = model(x, None)[0, 0].numpy()
        assert sr.shape == ref.shape
        nib.save(nib.Nifti1Image(sr.astype(np.float32), ref.affine), str(out / row.prediction))
    return out


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from rich.console import Console

    from crfm_bench import workflow
    from crfm_bench.engine.export import export_test_split

    root = tmp_path_factory.mktemp("score")
    params_file = project_params(root)
    params = load_params(params_file)
    zip_path = export_test_split(params, root / "test-inputs.zip")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "unzipped")
    (export_root,) = list((root / "unzipped").iterdir())
    preds = predict_elsewhere(export_root, root / "preds")
    console = Console(quiet=True)
    doc, _ = workflow.score(
        params,
        preds,
        "tricubic-lab2",
        method_params={"kernel": "keys"},
        url="https://example.org/m",
        console=console,
    )
    ours = workflow.run(params, ["tricubic"], console=console, report=False).board
    return {
        "root": root,
        "params_file": params_file,
        "params": params,
        "export": export_root,
        "preds": preds,
        "doc": doc,
        "board": ours,
    }


def test_export_has_inputs_grid_and_readme_but_no_answers(scored):
    root = scored["export"]
    subjects = pd.read_csv(root / "subjects.csv")
    assert len(subjects) == 2
    readme = (root / "README.md").read_text()
    for needle in ("_sr.nii.gz", "float32", "crfm-bench score", "HR grid", "intensity scale"):
        assert needle in readme
    names = {p.relative_to(root).as_posix() for p in root.rglob("*.nii.gz")}
    expected = set(subjects["lr_file"]) | set(subjects["reference_file"])
    assert names == expected  # LR targets and HR references only: no HR target
    assert all("_T2w" in n for n in subjects["lr_file"])
    assert all("_PDw" in n for n in subjects["reference_file"])
    for row in subjects.itertuples():
        lr = nib.load(str(root / row.lr_file))
        assert tuple(lr.shape) == tuple(int(v) for v in row.lr_shape.split(","))


def test_external_psnr_matches_our_own_tricubic_evaluation(scored):
    runs = scored["params"].paths.runs_dir / "models"
    ext = pd.read_csv(runs / "tricubic-lab2" / "per_subject.csv").set_index("subject")
    ours = pd.read_csv(runs / "tricubic" / "per_subject.csv").set_index("subject")
    assert list(ext.index) == list(ours.index) and len(ext) == 2
    for q in ("psnr", "ssim", "psnr_masked", "ssim_slice", "nmse"):
        np.testing.assert_allclose(ext[q], ours[q], rtol=0, atol=1e-4 if q == "psnr" else 1e-5)
    assert scored["doc"]["external"] is True
    assert scored["doc"]["test_psnr_mean"] == pytest.approx(ext["psnr"].mean())


def test_leaderboard_lists_it_as_external_without_training_columns(scored):
    from crfm_bench.report import leaderboard as lb

    board = scored["board"]
    row = board.set_index("model").loc["tricubic-lab2"]
    assert bool(row["external"]) and not bool(board.set_index("model").loc["tricubic", "external"])
    assert np.isnan(row["train_seconds"]) and np.isnan(row["params"])
    assert any(c[1] == "tricubic-lab2 (external)" for c in lb.cells(board))
    md = (scored["params"].paths.reports_dir / "leaderboard.md").read_text()
    assert "tricubic-lab2 (external)" in md
    # the versioned outputs (DVC, report) rank it too
    from crfm_bench.metrics import metric_spec, metric_spec_hash

    p = scored["params"]
    spec = metric_spec_hash(metric_spec(p.eval.slice_axis))
    dirs = lb.from_model_dirs(p.paths.runs_dir / "models", spec, task=p.task.model_dump())
    assert bool(dirs.set_index("model").loc["tricubic-lab2", "external"])


def test_external_run_is_tagged_with_provenance(scored):
    runs = [
        r for r in all_runs(scored["params"]) if r.data.tags.get("crfm.model") == "tricubic-lab2"
    ]
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["crfm.external"] == "true"
    assert run.data.tags["crfm.external.url"] == "https://example.org/m"
    assert run.data.params["method.kernel"] == "keys"
    assert run.data.tags.get("mlflow.parentRunId")
    assert "train_seconds" not in run.data.metrics


def test_same_submission_twice_is_reused_not_duplicated(scored):
    from crfm_bench.engine.score import score_predictions

    n = len(all_runs(scored["params"]))
    score_predictions(
        scored["params"],
        scored["preds"],
        "tricubic-lab2",
        {"kernel": "keys"},
        "https://example.org/m",
    )
    assert len(all_runs(scored["params"])) == n


def _nii(path: Path, data, affine) -> None:
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _break_missing(path: Path) -> None:
    path.unlink()


def _break_shape(path: Path) -> None:
    img = nib.load(str(path))
    _nii(path, np.asarray(img.dataobj)[:-2], img.affine)


def _break_affine(path: Path) -> None:
    img = nib.load(str(path))
    a = img.affine.copy()
    a[:3, 3] += a[:3, 0] / 2  # half a voxel along x
    _nii(path, np.asarray(img.dataobj, dtype=np.float32), a)


def _break_nan(path: Path) -> None:
    img = nib.load(str(path))
    d = np.asarray(img.dataobj, dtype=np.float32).copy()
    d[3, 4, 5] = np.nan
    _nii(path, d, img.affine)


def _break_int(path: Path) -> None:
    img = nib.load(str(path))
    _nii(path, np.asarray(img.dataobj).astype(np.int16), img.affine)


def _break_complex(path: Path) -> None:
    img = nib.load(str(path))
    _nii(path, np.asarray(img.dataobj).astype(np.complex64), img.affine)


def _break_4d(path: Path) -> None:
    img = nib.load(str(path))
    _nii(path, np.asarray(img.dataobj, dtype=np.float32)[..., None], img.affine)


BREAKERS = {
    "missing subject": (_break_missing, "missing"),
    "another shape": (_break_shape, "shape"),
    "another affine": (_break_affine, "affine"),
    "NaN": (_break_nan, "NaN"),
    "int16": (_break_int, "int16"),
    "complex": (_break_complex, "complex64"),
    "4D": (_break_4d, "4D"),
}


@pytest.mark.parametrize("case", list(BREAKERS))
def test_bad_prediction_one_line_nothing_logged_or_written(scored, tmp_path, case):
    from crfm_bench.engine.score import score_predictions

    breaker, word = BREAKERS[case]
    preds = Path(shutil.copytree(scored["preds"], tmp_path / "preds"))
    victim = sorted(preds.glob("*_sr.nii.gz"))[-1]
    breaker(victim)
    params = scored["params"]
    before = len(all_runs(params))
    name = "bad-" + case.replace(" ", "-").lower()
    with pytest.raises(CrfmBenchError) as err:
        score_predictions(params, preds, name, None, None)
    msg = str(err.value)
    assert str(victim) in msg and word in msg and "\n" not in msg
    assert len(all_runs(params)) == before
    assert not (params.paths.runs_dir / "models" / name).exists()


def test_cli_bad_prediction_exit_2_one_line(scored, tmp_path, capsys, monkeypatch):
    from crfm_cli.main import main

    preds = Path(shutil.copytree(scored["preds"], tmp_path / "preds"))
    victim = sorted(preds.glob("*_sr.nii.gz"))[0]
    _break_nan(victim)
    monkeypatch.chdir(scored["root"])
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(preds), "--name", "cli-bad", "--params", str(scored["params_file"])])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(victim) in err[0]


def test_name_of_a_builtin_model_is_refused(scored):
    from crfm_bench.engine.score import score_predictions

    with pytest.raises(CrfmBenchError, match="built-in model"):
        score_predictions(scored["params"], scored["preds"], "tricubic", None, None)


def test_report_shows_it_marked_external(scored):
    from crfm_bench.report.build import build_report

    path = build_report(scored["params"])
    md = path.with_suffix(".md").read_text()
    assert "tricubic-lab2 (external)" in md
    assert "tricubic-lab2 (external)" in path.read_text()


def test_cli_export_and_usage_errors(scored, tmp_path, capsys, monkeypatch):
    from crfm_cli.main import main

    monkeypatch.chdir(scored["root"])
    params = ["--params", str(scored["params_file"])]
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--export", str(tmp_path / "inputs.zip"), *params])
    assert exit_.value.code in (0, None)
    with zipfile.ZipFile(tmp_path / "inputs.zip") as zf:
        assert any(n.endswith("/README.md") for n in zf.namelist())
    capsys.readouterr()
    for argv, word in (
        (["score", *params], "PRED_DIR"),
        (["score", "--export", str(tmp_path / "inputs.tar"), *params], ".zip"),
        (
            ["score", str(scored["preds"]), "--name", "x", "--method-params", "[1]", *params],
            "JSON object",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0]
    assert not (tmp_path / "inputs.tar").exists()
