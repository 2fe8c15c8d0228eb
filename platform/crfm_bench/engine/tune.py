"""``crfm-bench tune``: Ray Tune with ASHA over ``params.tune.space``.

Each trial runs the training loop of ``crfm-bench run``: with ``train.num_workers`` 1 the loop
itself in the trial's process (:func:`crfm_bench.engine.loop.tune_trial`), with more a Ray Train
run of that many DDP workers driven by the trial
(:func:`tune_trial_distributed`, Train V2's ``TuneReportCallback``
pattern). The latter needs Ray's state API (dashboard): Ray Train frees the worker group of
a trial that ASHA stops only through it, else the next trial waits forever for CPUs. Trials are logged as nested
MLflow runs under one parent; the best configuration is printed and written as a complete
params file that ``crfm-bench run --params`` accepts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from crfm_bench.atomic import atomic_write_text
from crfm_bench.config import Params
from crfm_bench.engine.build import TRAIN_KEYS
from crfm_bench.engine.trainer import fit_model
from crfm_bench.errors import InputError


def tune_trial_distributed(config: dict) -> None:
    """Ray Tune function trainable for trials with several workers: the trial drives one Ray
    Train run (same loop, DDP) and forwards its epoch reports to Tune through
    ``TuneReportCallback`` (the Train V2 pattern: ``Tuner(TorchTrainer)`` is gone). The run
    is named after the trial and kept under ``base["storage"]``; its workers write their pids
    to ``<storage>/../pids/<trial>/``."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    base = config["base"]
    trial = ray.tune.get_context().get_trial_id()
    fit_model(
        Params.model_validate(base["params"]),
        base["model"],
        base["cases"],
        run_name=f"{base['model']}-{trial}",
        overrides={**base.get("overrides", {}), **config["sample"]},
        epochs=base["epochs"],
        pid_dir=Path(base["storage"]).parent / "pids" / trial,
        callbacks=[TuneReportCallback()],
        storage=base["storage"],
    )


def search_space(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Ray Tune samplers from the ``tune.space`` spec."""
    from ray import tune

    out = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        out[key] = {
            "loguniform": lambda a: tune.loguniform(a[0], a[1]),
            "uniform": lambda a: tune.uniform(a[0], a[1]),
            "choice": tune.choice,
        }[kind](args)
    return out


def best_params(params: Params, model: str, best: dict[str, Any]) -> Params:
    """``params`` with the best trial's values written into ``models.<model>``."""
    tree = params.model_dump(mode="json")
    mcfg = tree["models"].setdefault(model, params.model_config_for(model).model_dump(mode="json"))
    for key, value in best.items():
        if key in TRAIN_KEYS:
            mcfg[key] = value
        else:
            mcfg.setdefault("options", {})[key] = value
    # epochs stay as configured: tune.max_epochs is a short screening budget, and the
    # final run trains on the full schedule
    return Params.model_validate(tree)


def tune_model(
    params: Params,
    model: str | None = None,
    address: str | None = None,
    console=None,
    progress: bool = False,
):
    """Run the search; return ``(best values, best val_psnr, path of the best params file)``.
    ``progress``: show the trials (:class:`~crfm_bench.engine.progress.TrialTable`: a live
    table in a terminal, a line per trial result elsewhere)."""
    import ray
    from mlflow.entities import Metric, Param
    from ray import tune
    from rich.console import Console

    from crfm_bench.cluster import check_worker_group_fits, ensure_ray, ray_address
    from crfm_bench.engine.data import load_cases
    from crfm_bench.engine.loop import tune_trial
    from crfm_bench.engine.run import open_setting, validate_models
    from crfm_bench.models import model_info
    from crfm_bench.tracking import KIND_TAG, MODEL_TAG

    console = console or Console()
    model = model or params.tune.model
    validate_models([model], params)
    if not model_info(model).trainable:
        raise InputError(f"--model: '{model}' has nothing to tune (not trainable)")
    for key, spec in params.tune.space.items():
        if key in TRAIN_KEYS:
            continue
        # every option value the search can draw must build (checked before any work)
        kind, args = next(iter(spec.items()))
        for value in args if kind == "choice" else []:
            trial = params.model_copy(deep=True)
            cfg = trial.model_config_for(model).model_copy(deep=True)
            cfg.options = {**cfg.options, key: value}
            trial.models = {**trial.models, model: cfg}
            validate_models([model], trial)
    distributed = params.train.num_workers > 1
    if distributed and not (params.ray.dashboard or ray_address(params.ray, address)):
        raise InputError(
            "ray.dashboard false: tune with train.num_workers > 1 needs the local Ray's "
            "dashboard (Ray Train frees a stopped trial's workers through its state API)"
        )
    concurrent = check_worker_group_fits(params, address, params.tune.max_concurrent)
    setting = open_setting(params)
    client = setting.client
    where = ensure_ray(params.ray, address)
    cases_ref = ray.put((load_cases(params, ("train",)), load_cases(params, ("val",))))
    t = params.tune
    name = f"tune-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = client.create_run(
        setting.experiment_id, run_name=name, tags={KIND_TAG: "tune", MODEL_TAG: model}
    )
    per_trial = (
        f"a Ray Train run of {params.train.num_workers} workers" if distributed else "one process"
    )
    console.print(
        f"[bold]tune {model}[/bold]: {t.num_samples} trials with ASHA on {where}, "
        f"{per_trial} per trial, {concurrent} at a time"
    )
    storage = (params.paths.runs_dir / "tune").resolve()
    base = {
        "params": params.model_dump(mode="json"),
        "model": model,
        "cases": cases_ref,
        "overrides": {},
        "epochs": t.max_epochs,
        "storage": str(storage / name / "train"),
    }
    if distributed:
        # The trial only drives its Ray Train run, whose worker group asks for its own CPUs;
        # the trial holds no CPU (even 0.01 would leave a 2-CPU machine one short for two
        # 1-CPU workers) and reserves some memory instead, as Tune needs a non-empty request.
        trainable = tune.with_resources(tune_trial_distributed, {"cpu": 0, "memory": 256 * 2**20})
    else:
        own = {"cpu": params.train.cpus_per_worker}
        if params.train.use_gpu:
            own["gpu"] = 1
        trainable = tune.with_resources(tune_trial, own)
    callbacks, table = [], None
    if progress:
        from crfm_bench.engine.progress import TrialTable, trial_callback

        table = TrialTable(console, t.max_epochs)
        callbacks = [trial_callback(table)]
    tuner = tune.Tuner(
        trainable,
        param_space={"base": base, "sample": search_space(t.space)},
        tune_config=tune.TuneConfig(
            metric="val_psnr",
            mode="max",
            num_samples=t.num_samples,
            max_concurrent_trials=concurrent,
            scheduler=tune.schedulers.ASHAScheduler(
                time_attr="training_iteration",
                max_t=t.max_epochs,
                grace_period=min(t.grace_period, t.max_epochs),
                reduction_factor=t.reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=callbacks),
    )
    status = "FAILED"
    try:
        results = tuner.fit()
        for result in results:
            if result.metrics_dataframe is None or result.error:
                continue
            child = client.create_run(
                setting.experiment_id,
                run_name=f"trial-{result.path.rsplit('/', 1)[-1][:40]}",
                tags={
                    "mlflow.parentRunId": parent.info.run_id,
                    KIND_TAG: "trial",
                    MODEL_TAG: model,
                },
            )
            sample = result.config["sample"]
            client.log_batch(
                child.info.run_id,
                params=[Param(k, str(v)) for k, v in sample.items()],
                metrics=[
                    Metric(k, float(row[k]), int(time.time() * 1000), int(row["epoch"]))
                    for _, row in result.metrics_dataframe.iterrows()
                    for k in ("val_psnr", "train_loss")
                    if k in row
                ],
            )
            client.set_terminated(child.info.run_id, "FINISHED")
        best = results.get_best_result(metric="val_psnr", mode="max", scope="all")
        values = dict(best.config["sample"])
        score = float(best.metrics_dataframe["val_psnr"].max())
        tuned = best_params(params, model, values)
        path = params.paths.reports_dir / "tune" / f"{model}-best.yaml"
        atomic_write_text(path, yaml.safe_dump(tuned.model_dump(mode="json"), sort_keys=False))
        client.log_batch(
            parent.info.run_id,
            params=[Param(f"best.{k}", str(v)) for k, v in values.items()],
            metrics=[Metric("best_val_psnr", score, int(time.time() * 1000), 0)],
        )
        client.log_artifact(parent.info.run_id, str(path))
        status = "FINISHED"
        return values, score, Path(path)
    finally:
        if table is not None:
            table.stop()
        client.set_terminated(parent.info.run_id, status)
