"""``crfm-bench score``: rank any method's predictions under the metric contract.

A method trained and run elsewhere (another lab, another framework, a GPU cluster) is
scored exactly as our own models are: the method stays the user's, the scoring is ours
(the public-leaderboard model of fastMRI and Grand Challenge). The user predicts the test
split's HR target from the files :mod:`crfm_bench.engine.export` hands out, and comes back
with one NIfTI per test subject.

What is accepted (anything else: one line naming the file, nothing logged or written):

* one file ``<subject>_sr.nii.gz`` per test subject in ``PRED_DIR`` (files of other names
  are ignored and counted);
* a 3D image (no 4th axis, not even of length 1) on the HR grid of that subject: the same
  shape, and the same voxel-to-world affine to :data:`AFFINE_ATOL` mm per entry (the
  float32 precision of a NIfTI header, so an affine read from our files and written back by
  nibabel, ITK or ANTs passes; half a voxel, a flip or a transposed axis do not);
* real floating-point voxels, float32 or float64 on disk (:data:`ACCEPTED_DTYPES`):
  integer types are refused because quantised intensities would be scored as the method's
  error and usually mean a lost scaling, complex because the metric contract is on
  magnitude images;
* finite values (no NaN or Inf). Negative values are allowed (the contract clips);
* intensities on the scale of the LR input the export gave out (the contract divides the
  HR volume by its foreground 99.5th percentile and applies the same divisor to the
  prediction, as for our models).

The metrics are :func:`crfm_bench.metrics.evaluate_volume`, called as
:func:`crfm_bench.engine.evaluate.evaluate_cases` calls it (same reference volume, same
slice axis). The result is written to ``<runs_dir>/models/<name>/`` as an internal model's
(``metrics.json`` with ``"external": true``, ``per_subject.csv``, ``predictions/``) and
logged as an MLflow child run tagged ``crfm.external=true`` in the setting's experiment, so
the leaderboard and the report rank it alongside, marked external, with no training or
efficiency columns. The run key covers the predictions' voxel sha256, the method's
parameters and URL, the dataset and LR versions, the code and the metric contract: the same
submission scored twice is reused, not duplicated.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from crfm_bench.config import Params
from crfm_bench.data.manifest import voxel_sha256
from crfm_bench.engine.data import Case, load_cases
from crfm_bench.errors import InputError, MissingInputError

PRED_SUFFIX = "_sr.nii.gz"
ACCEPTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
AFFINE_ATOL = 1e-4  # mm
EXTERNAL_TAG = "crfm.external"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass
class Submission:
    """Validated predictions: ``volumes[subject]`` float32 on the HR grid, the files read,
    the voxel sha256 of each and the number of ignored files."""

    volumes: dict[str, np.ndarray]
    files: dict[str, Path]
    sha256: dict[str, str]
    ignored: int


def prediction_name(subject: str) -> str:
    """File name of a subject's prediction: ``<subject>_sr.nii.gz``."""
    return f"{subject}{PRED_SUFFIX}"


def check_name(name: str, params: Params) -> str:
    """A method name usable as a folder and a leaderboard row, not shadowing a model of ours."""
    from crfm_bench.models import list_models

    if not _NAME.match(name or ""):
        raise InputError(
            f"--name {name!r}: use 1-64 letters, digits, '.', '_', '+' or '-' (no spaces or "
            "slashes), starting with a letter or digit"
        )
    if name in list_models():
        raise InputError(
            f"--name {name!r}: a built-in model of crfm-bench has that name; choose another "
            f"(e.g. {name}-mylab)"
        )
    metrics = params.paths.runs_dir / "models" / name / "metrics.json"
    if metrics.is_file():
        try:
            external = json.loads(metrics.read_text()).get("external", False)
        except (OSError, json.JSONDecodeError):
            external = False
        if not external:
            raise InputError(
                f"--name {name!r}: {metrics.parent} holds an internal model's result; choose "
                "another name"
            )
    return name


def read_prediction(path: Path, case: Case) -> np.ndarray:
    """The prediction at ``path`` as float32 (X, Y, Z) if it fits ``case``'s HR grid.

    Raises MissingInputError if the file is missing and InputError (one line naming the
    file) if it is unreadable, of another dtype, not 3D, on another grid or not finite.
    """
    if not path.is_file():
        raise MissingInputError(
            f"{path}: missing; the test split has subject {case.subject}, so a prediction "
            f"named {prediction_name(case.subject)} is required"
        )
    try:
        img = nib.load(str(path))
        dtype = np.dtype(img.get_data_dtype())
        shape = tuple(int(n) for n in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types for a corrupt file
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__})") from None
    if dtype not in ACCEPTED_DTYPES:
        raise InputError(
            f"{path}: voxel type {dtype} is not accepted; write real float32 (or float64) "
            "intensities on the LR input's scale"
        )
    expected = tuple(case.hr.shape)
    if len(shape) != 3:
        raise InputError(
            f"{path}: expected a 3D volume of shape {expected}, got {len(shape)}D {shape}"
        )
    if shape != expected:
        raise InputError(f"{path}: shape {shape} differs from the HR grid {expected}")
    diff = float(np.abs(affine - case.hr_affine).max())
    if not diff <= AFFINE_ATOL:
        raise InputError(
            f"{path}: affine differs from the HR grid by up to {diff:.4g} mm (tolerance "
            f"{AFFINE_ATOL} mm); write the prediction with the affine given in subjects.csv "
            "(the reference volume's)"
        )
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise InputError(f"{path}: voxel data unreadable ({type(exc).__name__})") from None
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise InputError(f"{path}: {bad} voxels are NaN or Inf")
    return data


def read_submission(pred_dir: Path, cases: list[Case]) -> Submission:
    """Validate every test subject's prediction in ``pred_dir`` before anything is scored."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise MissingInputError(f"{pred_dir}: prediction folder not found")
    volumes, files, digests = {}, {}, {}
    for case in cases:
        path = pred_dir / prediction_name(case.subject)
        data = read_prediction(path, case)
        volumes[case.subject], files[case.subject] = data, path
        digests[case.subject] = voxel_sha256(data)
    wanted = {prediction_name(c.subject) for c in cases}
    ignored = sum(1 for p in pred_dir.iterdir() if p.is_file() and p.name not in wanted)
    return Submission(volumes, files, digests, ignored)


def score_submission(sub: Submission, cases: list[Case], name: str, params: Params) -> pd.DataFrame:
    """Per-subject metrics (one row per test subject), as :func:`evaluate_cases` computes them."""
    from crfm_bench.metrics import evaluate_volume

    rows = []
    for case in cases:
        hr = (case.hr * case.divisor).astype(np.float32)  # the reference evaluate_cases uses
        metrics = evaluate_volume(sub.volumes[case.subject], hr, slice_axis=params.eval.slice_axis)
        rows.append({"model": name, "subject": case.subject, **metrics})
    return pd.DataFrame(rows)


def parse_method_params(text: str | None) -> dict:
    """``--method-params`` JSON object (provenance only) -> dict."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--method-params: not valid JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(value, dict):
        raise InputError("--method-params: must be a JSON object, e.g. '{\"epochs\": 100}'")
    return value


def score_predictions(
    params: Params,
    pred_dir: Path,
    name: str,
    method_params: dict | None = None,
    url: str | None = None,
    console=None,
) -> tuple[dict, object]:
    """Validate, score, write ``<runs_dir>/models/<name>/`` and log an external MLflow run.

    Returns (``metrics.json`` content, the :class:`~crfm_bench.engine.run.Setting`, whose
    leaderboard :func:`crfm_bench.workflow.score` publishes). Raises InputError /
    MissingInputError before anything is logged or written when a prediction is bad.
    """
    from mlflow.entities import Metric, Param

    from crfm_bench.atomic import atomic_dir
    from crfm_bench.engine.run import (
        _flat,
        ensure_data,
        model_dir,
        open_setting,
        restore_outputs,
        subject_summary,
    )
    from crfm_bench.tracking import (
        DATA_TAG,
        KIND_TAG,
        MODEL_TAG,
        RUN_KEY_TAG,
        SPEC_TAG,
        code_version,
        find_model_runs,
        git_commit,
        run_key,
        setup_tracking,
    )

    method_params = dict(method_params or {})
    name = check_name(name, params)
    setup_tracking(params.tracking)  # an unreachable store fails before any work
    ensure_data(params, progress=False)
    cases = load_cases(params, ("test",), need_reference=False)
    sub = read_submission(Path(pred_dir), cases)
    per_subject = score_submission(sub, cases, name, params)
    metrics = subject_summary(per_subject)

    setting = open_setting(params)
    client = setting.client
    payload = {
        "external": True,
        "model": name,
        "predictions": sub.sha256,
        "method_params": method_params,
        "url": url or "",
        "task": params.task.model_dump(mode="json"),
        "slice_axis": params.eval.slice_axis,
        "dataset_version": setting.dataset_version,
        "lr_version": setting.lr_version,
        "code_version": code_version(),
        "metric_spec_hash": setting.spec_hash,
    }
    key = run_key(payload)
    dest = model_dir(params, name)
    finished = [
        r
        for r in find_model_runs(client, setting.experiment_id, key)
        if r.info.status == "FINISHED"
    ]
    if finished:
        run_id = finished[0].info.run_id
        if not (dest / "metrics.json").is_file() or (
            json.loads((dest / "metrics.json").read_text()).get("run_key") != key
        ):
            shutil.rmtree(dest, ignore_errors=True)
            restore_outputs(client, run_id, dest)
        if console is not None:
            console.print(
                f"[green]{name}[/green]: this submission was scored before (run {run_id})"
            )
        return json.loads((dest / "metrics.json").read_text()), setting

    common = {
        DATA_TAG: setting.dataset_version,
        SPEC_TAG: setting.spec_hash,
        EXTERNAL_TAG: "true",
        "git_commit": git_commit() or "unknown",
    }
    parent = client.create_run(
        setting.experiment_id,
        run_name=f"score-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={KIND_TAG: "score", **common},
    ).info.run_id
    status = "FAILED"
    run_id = None
    try:
        run_id = client.create_run(
            setting.experiment_id,
            run_name=name,
            tags={
                "mlflow.parentRunId": parent,
                KIND_TAG: "model",
                MODEL_TAG: name,
                RUN_KEY_TAG: key,
                "lr_version": setting.lr_version,
                "code_version": payload["code_version"],
                "family": "external",
                "crfm.external.url": url or "",
                "crfm.external.params": json.dumps(method_params, sort_keys=True)[:5000],
                **common,
            },
        ).info.run_id
        flat = _flat("method.", method_params)
        flat.update({"external": "true", "url": url or "", "pred_dir": str(Path(pred_dir))})
        client.log_batch(run_id, params=[Param(k, v) for k, v in flat.items()])
        doc = {
            "model": name,
            "external": True,
            "method_params": method_params,
            "url": url or "",
            "run_key": key,
            "run_id": run_id,
            "metric_spec_hash": setting.spec_hash,
            "dataset_version": setting.dataset_version,
            "lr_version": setting.lr_version,
            "task": params.task.model_dump(mode="json"),
            "predictions_sha256": sub.sha256,
            **metrics,
        }
        with atomic_dir(dest) as out:
            per_subject.to_csv(out / "per_subject.csv", index=False)
            (out / "predictions").mkdir()
            for subject, path in sub.files.items():
                shutil.copyfile(path, out / "predictions" / prediction_name(subject))
            (out / "metrics.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
            client.log_artifacts(run_id, str(out))
        client.set_terminated(run_id, "FINISHED")
        status = "FINISHED"
    finally:
        if run_id is not None and status != "FINISHED":
            client.set_terminated(run_id, "FAILED")
        client.set_terminated(parent, status)
    if console is not None:
        more = f" ({sub.ignored} other files ignored)" if sub.ignored else ""
        console.print(
            f"[green]{name}[/green] (external): PSNR {metrics['test_psnr_mean']:.2f} dB, "
            f"SSIM {metrics['test_ssim_mean']:.4f} on {len(cases)} test subjects{more}"
        )
    return doc, setting
