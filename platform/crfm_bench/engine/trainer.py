"""One Ray Train ``TorchTrainer`` per model (Train V2 API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crfm_bench.config import Params
from crfm_bench.errors import ServiceError

# Ray Train waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (default 60 s) for a worker group's
# placement group, and by default retries that forever (FailureConfig's
# controller_failure_limit -1): a run whose CPUs never free up would wait without end. The
# wait is bounded at START_ATTEMPTS tries, then one error names what it waited for.
START_ATTEMPTS = 5


def start_timeout_s() -> float:
    """Seconds Ray Train waits for one worker-group start (its own setting)."""
    import os

    return float(os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60"))


def storage_path(params: Params) -> str:
    """Where Ray keeps run state and checkpoints: ``train.storage_path`` or ``<runs_dir>/ray``."""
    if params.train.storage_path:
        return params.train.storage_path
    return str((params.paths.runs_dir / "ray").resolve())


def fit_model(
    params: Params,
    model: str,
    cases_ref: Any,
    run_name: str,
    mlflow_uri: str | None = None,
    mlflow_run_id: str | None = None,
    overrides: dict[str, Any] | None = None,
    epochs: int | None = None,
    pid_dir: Path | None = None,
    callbacks: list | None = None,
    storage: str | None = None,
    seed: int | None = None,
):
    """Train ``model`` on Ray Train; return the ``ray.train.Result``.

    ``cases_ref`` is an ObjectRef to ``(train_cases, val_cases)`` so workers on any node get
    the data through the object store. A rerun with the same ``run_name`` and storage
    resumes from the last checkpoint (Ray restores the run's checkpoint manager), as does a
    worker group restarted after a failure (``FailureConfig.max_failures``).
    ``callbacks`` are extra Ray Train ``UserCallback``s (a Tune trial passes its
    ``TuneReportCallback``, ``crfm-bench run`` its progress display); ``storage`` overrides
    :func:`storage_path`; ``seed`` is the training seed (default ``train.seed``).
    """
    from ray.train import (
        CheckpointConfig,
        ControllerError,
        FailureConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    from crfm_bench.engine.loop import train_loop_per_worker
    from crfm_bench.engine.rendezvous import torch_config

    t = params.train
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = 1
    callbacks = list(callbacks or [])
    if mlflow_uri and mlflow_run_id:
        from crfm_bench.engine.callbacks import MlflowEpochLogger

        callbacks.append(MlflowEpochLogger(mlflow_uri, mlflow_run_id))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "params": params.model_dump(mode="json"),
            "model": model,
            "cases": cases_ref,
            "overrides": overrides or {},
            "epochs": epochs,
            "pid_dir": str(pid_dir) if pid_dir else None,
            "seed": seed,
        },
        torch_config=torch_config(),  # the local Ray: a rendezvous that opens no port
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage or storage_path(params),
            checkpoint_config=CheckpointConfig(num_to_keep=t.num_to_keep),
            failure_config=FailureConfig(
                max_failures=t.max_failures, controller_failure_limit=START_ATTEMPTS - 1
            ),
            callbacks=callbacks,
        ),
    )
    try:
        return trainer.fit()
    except ControllerError as exc:
        if type(exc.controller_failure).__name__ != "WorkerGroupStartupTimeoutError":
            raise
        waited = START_ATTEMPTS * start_timeout_s()
        raise ServiceError(
            f"Ray Train run {run_name}: its worker group ({t.num_workers} worker(s) x "
            f"{t.cpus_per_worker} CPU) got no placement group within {waited:.0f} s "
            "(other Ray work holds the CPUs; see `ray status`)"
        ) from None
