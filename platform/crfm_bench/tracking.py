"""MLflow tracking: where runs go, one experiment per benchmark setting, run keys.

* Default store: a local SQLite file ``<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlruns``;
  ``tracking.uri`` in params.yaml or ``MLFLOW_TRACKING_URI`` points at a server instead.
* The store is checked *before* any training, so an unreachable server is one clear error.
* One experiment per setting (dataset version, degradation domain and scale, target <-
  reference); one parent run per ``crfm-bench run``, a nested child run per model.
* A child run carries a ``run_key`` tag (hash of model config + data version + code +
  metric spec); a finished run with the same key is reused instead of retrained, so
  reruns add no duplicate leaderboard entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from crfm_bench.config import Params, TrackingConfig
from crfm_bench.errors import ServiceError

KIND_TAG = "crfm.kind"
RUN_KEY_TAG = "crfm.run_key"
MODEL_TAG = "crfm.model"
SPEC_TAG = "metric_spec_hash"
DATA_TAG = "dataset_version"
SEED_TAG = "crfm.seed"
RANK_TAG = "crfm.rank"


def tracking_uri(cfg: TrackingConfig) -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    return (
        cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    )


def check_tracking(uri: str, timeout_s: float = 10.0) -> None:
    """Raise ServiceError (one line naming the URI) if the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise ServiceError(f"tracking server {uri}: /health answered {resp.status}")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(
                f"tracking server {uri}: unreachable ({reason}); start it or set "
                "tracking.uri / MLFLOW_TRACKING_URI"
            ) from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
            raise ServiceError(f"tracking store {uri}: folder {db.parent} is not writable")
    elif uri.startswith("file:") or "://" not in uri:
        raise ServiceError(
            f"tracking store {uri}: MLflow's file store is in maintenance mode; use "
            "sqlite:///path/mlflow.db or a tracking server"
        )


def setup_tracking(cfg: TrackingConfig):
    """Set the tracking URI after checking it; return an ``MlflowClient``."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(cfg.timeout_s)))
    uri = tracking_uri(cfg)
    check_tracking(uri, cfg.timeout_s)
    import mlflow

    # MLflow also exports the URI as MLFLOW_TRACKING_URI for subprocesses. tracking_uri()
    # reads that variable as the user's choice, so a second setting in the same process (a
    # library user, the tests) would silently track into the first one's store: keep the
    # environment as the user set it (the workers get the URI explicitly).
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return mlflow.MlflowClient(uri)


def experiment_name(params: Params, dataset_version: str) -> str:
    """``crfm-bench/<data version>/<domain>-x<scale>/<target><-<reference>``."""
    if params.benchmark.experiment:
        return params.benchmark.experiment
    t = params.task
    return (
        f"{params.tracking.experiment_prefix}/{dataset_version}/{t.domain}-x{t.scale}/"
        f"{t.target}<-{t.reference or 'none'}"
    )


def get_or_create_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """Experiment id of ``name``, created (artifacts under ``artifact_location``) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    if artifact_location is None and tracking_uri_is_local(client.tracking_uri):
        artifact_location = (Path.cwd() / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def tracking_uri_is_local(uri: str) -> bool:
    return uri.startswith("sqlite:")


# The code a trained and evaluated result depends on (paths under crfm_bench/): the run key
# hashes these files and the DVC train stages depend on that hash (``crfm-bench
# code-version``), so this tuple is the one answer to "which code matters". Not in it: the
# report, the CLI, tracking, progress display and cluster plumbing.
RESULT_CODE = (
    "config.py",
    "scale.py",
    "errors.py",
    "data",
    "degrade",
    "models",
    "metrics",
    "engine/build.py",
    "engine/data.py",
    "engine/efficiency.py",
    "engine/evaluate.py",
    "engine/inference.py",
    "engine/loop.py",
    "engine/run.py",
    "engine/session.py",
    "engine/state.py",
    "engine/step.py",
    "engine/trainer.py",
)


def result_code_files() -> list[Path]:
    """The Python files of :data:`RESULT_CODE`, sorted."""
    root = Path(__file__).resolve().parent
    files: set[Path] = set()
    for entry in RESULT_CODE:
        path = root / entry
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(files)


def code_version() -> str:
    """Hash of :data:`RESULT_CODE`: a change to that code changes the run key (and retrains);
    a change elsewhere (the report's wording, the CLI) does not."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in result_code_files():
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def git_commit() -> str | None:
    """The git commit of the working directory, if it is a git checkout."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_key(payload: dict[str, Any]) -> str:
    """Stable 16-hex key of a JSON-able payload."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_model_runs(client, experiment_id: str, key: str) -> list:
    """Child runs with ``run_key`` = key, newest first (any status)."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
    )
