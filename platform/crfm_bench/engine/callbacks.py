"""Ray Train callbacks (run in the Train controller, not in the workers)."""

from __future__ import annotations

import time

from ray.train import UserCallback


class MlflowEpochLogger(UserCallback):
    """Log every ``ray.train.report`` of rank 0 to one MLflow run, step = epoch.

    The callback runs once per report in the Train controller, whatever the number of
    workers, so each epoch is logged once; a worker group restarted after a failure keeps
    logging to the same run.
    """

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri = uri
        self.run_id = run_id

    def after_report(self, run_context, metrics, checkpoint) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        m = metrics[0]
        step = int(m.get("epoch", 0))
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step)
            for k, v in m.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and k not in ("epoch", "epochs")
        ]
        MlflowClient(self.uri).log_batch(self.run_id, metrics=batch)
