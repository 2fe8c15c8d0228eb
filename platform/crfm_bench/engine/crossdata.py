"""Cross-dataset evaluation: models trained on one dataset, tested on another's test split.

``crfm-bench run --test-data DIR`` (or ``task.test_data: DIR``) first runs the benchmark as
usual on ``paths.data_dir`` (dataset X), then evaluates each model on the test split of the
dataset under ``DIR`` (dataset Y, laid out as any data folder: ``DIR/hr/manifest.csv`` from
``crfm-bench synth`` or ``data ingest`` with ``-S paths.data_dir=DIR``).

What makes the numbers mean something:

* the setting is the same: the target and reference contrasts of ``task`` must exist in Y
  (refused otherwise), and Y's LR volumes are made by the same degradation (domain, scale,
  every ``degrade`` parameter and seed). A missing ``DIR/lr/<domain>-<scale>`` is built
  with the current ``degrade`` settings; an existing one made with other operator
  parameters is refused;
* the weights are the ones the leaderboard of X ranks: the finished MLflow run of X with
  the model's run key (its ``checkpoint/`` artifact), never a retrained copy;
* the evaluation is :func:`crfm_bench.engine.evaluate.evaluate_cases` on Y's test cases.

The result is its own setting, "trained on X, tested on Y": MLflow experiment
``<X's experiment>/tested-on-<Y version>``, one child run per model (tags
``crfm.trained_on``, ``crfm.tested_on``, ``crfm.train_run_id``), outputs under
``<runs_dir>/crossdata/<model>/`` (``metrics.json`` records ``trained_on``/``tested_on``;
one test dataset per project folder at a time, so DVC can name the outputs; MLflow keeps
every one) and the leaderboard in ``<reports_dir>/crossdata/leaderboard.{csv,md}``
(:func:`crfm_bench.report.leaderboard.crossdata_from_outputs` for DVC). A run key over the training run key and
Y's dataset and LR versions makes a rerun reuse finished evaluations.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from crfm_bench.config import Params
from crfm_bench.data.manifest import manifest_version, read_manifest
from crfm_bench.engine.data import lr_dir
from crfm_bench.errors import InputError, MissingInputError

EFFICIENCY_FROM_TRAINING = (
    "params",
    "macs_g",
    "train_gflop_step",
    "activation_mb",
    "train_seconds",
)


@dataclass
class CrossSetting:
    """Where a cross-dataset evaluation is logged and written."""

    params: Params  # the test dataset's params (paths.data_dir = DIR)
    trained_on: str
    tested_on: str
    test_lr_version: str
    experiment: str
    experiment_id: str
    out_dir: Path
    reports_dir: Path


def params_for_test_data(params: Params, test_data: Path) -> Params:
    """``params`` with ``paths.data_dir`` = ``test_data``: same task, degradation, evaluation."""
    paths = params.paths.model_copy(update={"data_dir": Path(test_data)})
    return params.model_copy(update={"paths": paths})


def check_test_data(params: Params, test_data: Path) -> None:
    """Fail early (before any training) if ``test_data`` is not a dataset of the setting."""
    hr = Path(test_data) / "hr" / "manifest.csv"
    if not hr.is_file():
        raise MissingInputError(
            f"{hr}: not found; --test-data needs an ingested dataset folder (crfm-bench data "
            f"ingest KIND SRC -S paths.data_dir={test_data})"
        )
    if Path(test_data).resolve() == Path(params.paths.data_dir).resolve():
        raise InputError(f"--test-data {test_data}: is the training dataset itself")
    contrasts = set(read_manifest(hr)["contrast"])
    task = params.task
    for what, c in (("task.target", task.target), ("task.reference", task.reference)):
        if c is not None and c not in contrasts:
            raise InputError(
                f"{hr}: has no {c} ({what}); cross-dataset evaluation needs the training "
                f"setting's contrasts (found {', '.join(sorted(contrasts))})"
            )


def prepare_test_data(params: Params, test_data: Path) -> Params:
    """Check dataset Y under ``test_data`` fits the setting; build its LR version if missing."""
    from crfm_bench.degrade.stage import degrade_dataset

    check_test_data(params, test_data)
    task = params.task
    tparams = params_for_test_data(params, test_data)
    t_lr = lr_dir(tparams) / "manifest.csv"
    if not t_lr.is_file():
        degrade_dataset(tparams, domain=task.domain, scale=task.scale, progress=False)
    home = read_manifest(lr_dir(params) / "manifest.csv", required=("params", "seed"))
    other = read_manifest(t_lr, required=("params",))
    if set(home["params"]) != set(other["params"]):
        raise InputError(
            f"{t_lr}: made with other degradation parameters than {lr_dir(params)}; remove it "
            "(it is rebuilt with the current degrade settings) or align degrade.*"
        )
    return tparams


def open_cross_setting(params: Params, home, test_data: Path) -> CrossSetting:
    """The "trained on X, tested on Y" experiment (created if missing)."""
    from crfm_bench.tracking import get_or_create_experiment

    tparams = prepare_test_data(params, test_data)
    tested_on = manifest_version(Path(test_data) / "hr" / "manifest.csv")
    if tested_on == home.dataset_version:
        raise InputError(
            f"--test-data {test_data}: holds the same data as the training dataset "
            f"(version {tested_on})"
        )
    name = f"{home.experiment}/tested-on-{tested_on}"
    exp_id = get_or_create_experiment(home.client, name, params.tracking.artifact_location)
    return CrossSetting(
        params=tparams,
        trained_on=home.dataset_version,
        tested_on=tested_on,
        test_lr_version=manifest_version(lr_dir(tparams) / "manifest.csv"),
        experiment=name,
        experiment_id=exp_id,
        out_dir=params.paths.runs_dir / "crossdata",
        reports_dir=params.paths.reports_dir / "crossdata",
    )


def trained_weights(client, run_id: str) -> dict:
    """The model state dict a finished run logged under ``checkpoint/``."""
    from crfm_bench.engine.state import CHECKPOINT_FILE

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, "checkpoint", tmp))
        state = torch.load(local / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    return state["model"]


@dataclass
class CrossOutcome:
    """What :func:`evaluate_cross` leaves for the leaderboard: the training setting, the
    cross setting, the parent MLflow run and the board's title."""

    home: object
    cross: CrossSetting
    parent_id: str
    title: str


def evaluate_cross(
    params: Params,
    names: list[str],
    test_data: Path,
    force: bool = False,
    console=None,
) -> CrossOutcome:
    """Evaluate ``names`` (already run on ``paths.data_dir``) on ``test_data``'s test split,
    each a finished MLflow run of the "trained on X, tested on Y" experiment, under one parent
    run; :func:`crfm_bench.workflow.cross` ranks them (the engine draws no leaderboard)."""
    from mlflow.entities import Metric, Param

    from crfm_bench.atomic import atomic_dir
    from crfm_bench.engine.build import build_model
    from crfm_bench.engine.data import load_cases
    from crfm_bench.engine.evaluate import evaluate_cases
    from crfm_bench.engine.run import _flat, model_payload, open_setting, subject_summary
    from crfm_bench.models import model_info
    from crfm_bench.tracking import (
        DATA_TAG,
        KIND_TAG,
        MODEL_TAG,
        RUN_KEY_TAG,
        SPEC_TAG,
        find_model_runs,
        git_commit,
        run_key,
    )

    home = open_setting(params)
    cross = open_cross_setting(params, home, test_data)
    client = home.client
    cases = load_cases(cross.params, ("test",))
    title = f"trained on {cross.trained_on}, tested on {cross.tested_on}: {home.experiment}"
    if console is not None:
        console.print(f"[bold]cross-dataset[/bold] {title} ({len(cases)} test subjects)")
    parent = client.create_run(
        cross.experiment_id,
        run_name=f"crossdata-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            KIND_TAG: "crossdata",
            DATA_TAG: cross.tested_on,
            SPEC_TAG: home.spec_hash,
            "crfm.trained_on": cross.trained_on,
            "crfm.tested_on": cross.tested_on,
            "git_commit": git_commit() or "unknown",
        },
    ).info.run_id
    status = "FAILED"
    try:
        for name in names:
            payload = model_payload(params, name, home)
            train_key = run_key(payload)
            trained = [
                r
                for r in find_model_runs(client, home.experiment_id, train_key)
                if r.info.status == "FINISHED"
            ]
            if not trained and model_info(name).trainable:
                raise InputError(
                    f"--models {name}: no finished training run with key {train_key} in "
                    f"{home.experiment}; run `crfm-bench run --models {name}` first"
                )
            key = run_key(
                {
                    **payload,
                    "crossdata": True,
                    "test_dataset_version": cross.tested_on,
                    "test_lr_version": cross.test_lr_version,
                }
            )
            done = [
                r
                for r in find_model_runs(client, cross.experiment_id, key)
                if r.info.status == "FINISHED"
            ]
            if done and not force:
                if console is not None:
                    console.print(f"[green]{name}[/green]: evaluated on {cross.tested_on} before")
                continue
            model = build_model(params, name)
            train_run = trained[0] if trained else None
            if model_info(name).trainable:
                model.load_state_dict(trained_weights(client, train_run.info.run_id))
            run_id = client.create_run(
                cross.experiment_id,
                run_name=name,
                tags={
                    "mlflow.parentRunId": parent,
                    KIND_TAG: "model",
                    MODEL_TAG: name,
                    RUN_KEY_TAG: key,
                    SPEC_TAG: home.spec_hash,
                    DATA_TAG: cross.tested_on,
                    "lr_version": cross.test_lr_version,
                    "crfm.trained_on": cross.trained_on,
                    "crfm.tested_on": cross.tested_on,
                    "crfm.train_run_id": train_run.info.run_id if train_run else "",
                    "family": model_info(name).family,
                },
            ).info.run_id
            try:
                client.log_batch(
                    run_id, params=[Param(k, v) for k, v in _flat("", payload).items()]
                )
                with atomic_dir(cross.out_dir / name) as out:
                    per_subject = evaluate_cases(
                        model, name, cases, cross.params, out_dir=out / "predictions"
                    )
                    metrics = {
                        **subject_summary(per_subject),
                        "infer_seconds_per_volume": float(per_subject["infer_seconds"].mean()),
                    }
                    if train_run is not None:
                        for k in EFFICIENCY_FROM_TRAINING:
                            if k in train_run.data.metrics:
                                metrics[k] = float(train_run.data.metrics[k])
                    per_subject.to_csv(out / "per_subject.csv", index=False)
                    doc = {
                        "model": name,
                        "run_key": key,
                        "run_id": run_id,
                        "train_run_id": train_run.info.run_id if train_run else None,
                        "metric_spec_hash": home.spec_hash,
                        "dataset_version": cross.tested_on,
                        "trained_on": cross.trained_on,
                        "tested_on": cross.tested_on,
                        "lr_version": cross.test_lr_version,
                        "task": params.task.model_dump(mode="json"),
                        **metrics,
                    }
                    (out / "metrics.json").write_text(
                        json.dumps(doc, indent=2, sort_keys=True) + "\n"
                    )
                    now = int(time.time() * 1000)
                    client.log_batch(
                        run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()]
                    )
                    client.log_artifacts(run_id, str(out))
                client.set_terminated(run_id, "FINISHED")
            except BaseException:
                client.set_terminated(run_id, "FAILED")
                raise
            if console is not None:
                console.print(
                    f"[green]{name}[/green] on {cross.tested_on}: PSNR "
                    f"{metrics['test_psnr_mean']:.2f} dB, SSIM {metrics['test_ssim_mean']:.4f}"
                )
        status = "FINISHED"
    finally:
        client.set_terminated(parent, status)
    return CrossOutcome(home, cross, parent, title)
