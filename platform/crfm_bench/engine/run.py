"""``crfm-bench run``: train and evaluate models, one MLflow run per model.

For each model: a run key (model config, training config, task, evaluation, dataset
version, code version, metric contract) decides whether a finished MLflow run can be
reused, an interrupted one resumed (Ray restores its checkpoint) or a new one started.
Training runs on Ray Train (:mod:`crfm_bench.engine.trainer`), evaluation on the test split
in this process (:mod:`crfm_bench.engine.evaluate`), and everything is logged to MLflow:
one parent run per invocation, one nested child run per model.

**Seeds** (``train.seeds`` = n > 1, or ``crfm-bench run --seeds n``): each model is trained
with the training seeds ``train.seed``, ``train.seed + 1``, ...; data, splits and validation
patches stay the same. MLflow: the model's run (kind ``model``, nested under the benchmark's
parent run) holds the aggregate, and each seed is a child run nested under it (kind
``seed``, tag ``crfm.seed``). A seed whose run key matches an earlier finished run (seed 1
of a multi-seed run and an earlier single-seed run share their key) is reused, not
retrained; that run stays where it was and the model's run lists it in ``seed_runs``.
Outputs: ``runs/models/<name>/seed-<k>/`` per seed (k from 1), and at
``runs/models/<name>/`` the aggregate: ``metrics.json`` (``test_<metric>_mean`` = mean over
seeds of the per-seed test means, ``test_<metric>_std`` = their sample std over seeds),
``per_subject.csv`` (each subject's metrics averaged over seeds, for the paired tests),
``history.csv`` and predictions of seed 1.

With one seed, ``test_<metric>_std`` is the sample std (ddof 1) over test subjects from
:func:`crfm_bench.metrics.summarise`; it is undefined for one subject and then left out
(tables show the mean alone).

The leaderboard and the report are not made here (the engine does not import the report):
:mod:`crfm_bench.workflow` runs this, then them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crfm_bench.config import Params
from crfm_bench.data.manifest import manifest_version
from crfm_bench.engine.build import build_model, model_options
from crfm_bench.engine.data import lr_dir
from crfm_bench.errors import InputError, MissingInputError
from crfm_bench.metrics import METRIC_NAMES
from crfm_bench.tracking import (
    DATA_TAG,
    KIND_TAG,
    MODEL_TAG,
    RUN_KEY_TAG,
    SEED_TAG,
    SPEC_TAG,
    code_version,
    experiment_name,
    find_model_runs,
    get_or_create_experiment,
    git_commit,
    run_key,
    setup_tracking,
    tracking_uri,
)


@dataclass
class Setting:
    """The MLflow experiment a benchmark setting maps to."""

    client: object
    experiment_id: str | None
    experiment: str
    dataset_version: str
    lr_version: str
    spec_hash: str


def validate_models(names: list[str], params: Params) -> list[str]:
    """Known model names, each once; reference models only with ``task.reference`` set, and
    models meant for one degradation domain (zerofill: k-space) only on a task of that domain.

    Each model is built once with its configured size and options, so a bad option is
    reported before any data, tracking or training work starts.
    """
    from crfm_bench.models import list_models, model_info
    from crfm_bench.models.registry import applicable_models

    known = list_models()
    out: list[str] = []
    for name in names:
        name = name.strip()
        if not name or name in out:
            continue
        if name not in known:
            raise InputError(f"--models: unknown model '{name}'; known: {', '.join(known)}")
        if model_info(name).needs_reference and params.task.reference is None:
            raise InputError(
                f"--models: model '{name}' needs a reference contrast; set task.reference "
                "(e.g. -S task.reference=PDw)"
            )
        if not applicable_models([name], params.task.domain)[0]:
            raise InputError(
                f"--models: model '{name}' is a baseline of {'/'.join(model_info(name).domains)} "
                f"degradations only; task.domain is {params.task.domain}"
            )
        build_model(params, name)
        out.append(name)
    unknown = sorted(set(params.models) - set(known))
    if unknown:
        raise InputError(f"models.{unknown[0]}: unknown model; known: {', '.join(known)}")
    if not out:
        raise InputError("--models: no model given")
    return out


def ensure_data(params: Params, progress: bool = True) -> None:
    """Build the embedded dataset and the task's LR version if they are missing."""
    hr = params.paths.data_dir / "hr" / "manifest.csv"
    if not hr.is_file():
        from crfm_bench.data.synth import synthesize_dataset

        synthesize_dataset(params.synth, params.paths.data_dir / "hr", progress=progress)
    if not (lr_dir(params) / "manifest.csv").is_file():
        from crfm_bench.degrade.stage import degrade_dataset

        degrade_dataset(
            params, domain=params.task.domain, scale=params.task.scale, progress=progress
        )


def open_setting(params: Params, build_data: bool = True) -> Setting:
    """Check tracking first (before any work), then find the setting's experiment.

    ``build_data``: synthesise/degrade missing data and create the experiment if needed
    (``crfm-bench run``, ``tune``). Without it nothing is written: missing data is a
    MissingInputError naming the manifest, and a missing experiment gives
    ``experiment_id`` None (``crfm-bench leaderboard``).
    """
    from crfm_bench.metrics import metric_spec, metric_spec_hash

    hr = params.paths.data_dir / "hr" / "manifest.csv"
    lr = lr_dir(params) / "manifest.csv"
    if not build_data:  # before touching the tracking store: nothing is written
        for manifest in (hr, lr):
            if not manifest.is_file():
                raise MissingInputError(f"{manifest}: not found (crfm-bench run builds it)")
    client = setup_tracking(params.tracking)
    if build_data:
        ensure_data(params)
    version = manifest_version(hr)
    name = experiment_name(params, version)
    if build_data:
        exp_id = get_or_create_experiment(client, name, params.tracking.artifact_location)
    else:
        exp = client.get_experiment_by_name(name)
        exp_id = None if exp is None or exp.lifecycle_stage == "deleted" else exp.experiment_id
    return Setting(
        client,
        exp_id,
        name,
        version,
        manifest_version(lr),
        metric_spec_hash(metric_spec(params.eval.slice_axis)),
    )


def model_payload(params: Params, name: str, setting: Setting, seed: int | None = None) -> dict:
    """What identifies a model's result: a change in any of it means a new run. ``seed``: the
    training seed of this result (default ``train.seed``); ``train.seeds`` is not part of it,
    so seed 1 of a multi-seed run has the key of a single-seed run."""
    train = params.train.model_dump(mode="json")
    for k in ("storage_path", "max_failures", "num_to_keep", "seeds"):
        train.pop(k)
    if seed is not None:
        train["seed"] = seed
    return {
        "model": name,
        "model_config": {
            **params.model_config_for(name).model_dump(mode="json"),
            "options": model_options(params, name),  # with benchmark.residual filled in
        },
        "train": train,
        "task": params.task.model_dump(mode="json"),
        "eval": params.eval.model_dump(mode="json"),
        "dataset_version": setting.dataset_version,
        "lr_version": setting.lr_version,
        "code_version": code_version(),
        "metric_spec_hash": setting.spec_hash,
    }


def seed_list(params: Params) -> list[int]:
    """The training seeds of each model: ``train.seed`` + 0 .. ``train.seeds`` - 1."""
    return [params.train.seed + k for k in range(params.train.seeds)]


def _flat(prefix: str, tree: dict) -> dict[str, str]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(key + ".", v))
        else:
            out[key] = str(v)[:500]
    return out


def efficiency(model: torch.nn.Module, params: Params, hr_shape, name: str | None = None) -> dict:
    """Parameters, GMACs of one evaluation window, training GFLOP per step (forward +
    backward of one batch of training patches), activation MB of one training patch."""
    from crfm_bench.engine.data import patch_shape
    from crfm_bench.engine.efficiency import activation_bytes, count_macs, train_step_flops

    scale = params.task.factors

    def sample(patch: int, batch: int = 1):
        p = patch_shape(tuple(hr_shape), patch, scale)
        lr = torch.rand(batch, 1, *(n // s for n, s in zip(p, scale, strict=True)))
        ref = torch.rand(batch, 1, *p) if getattr(model, "needs_reference", False) else None
        return lr, ref, torch.rand(batch, 1, *p)

    model = model.cpu()
    n_params = sum(p.numel() for p in model.parameters())
    out = {
        "params": float(n_params),
        "macs_g": count_macs(model.eval(), *sample(params.eval.window)[:2]) / 1e9,
    }
    if n_params:
        batch = (params.model_config_for(name).batch_size if name else None) or (
            params.train.batch_size
        )
        out["train_gflop_step"] = (
            train_step_flops(model, *sample(params.train.patch_size, batch)) / 1e9
        )
        model.train()
        out["activation_mb"] = activation_bytes(model, *sample(params.train.patch_size)[:2]) / 2**20
        model.eval()
    return out


def subject_summary(per_subject: pd.DataFrame) -> dict[str, float]:
    """``test_<metric>_mean`` and ``test_<metric>_std`` over subjects
    (:func:`crfm_bench.metrics.summarise`); a std that is undefined (one subject) is left out."""
    from crfm_bench.metrics import summarise

    row = summarise(per_subject.assign(model="m"), by="model").iloc[0]
    out = {"test_n_subjects": float(len(per_subject))}
    for m in METRIC_NAMES:
        if f"{m}_mean" in row:
            out[f"test_{m}_mean"] = float(row[f"{m}_mean"])
            if np.isfinite(row[f"{m}_std"]):
                out[f"test_{m}_std"] = float(row[f"{m}_std"])
    return out


def seed_summary(per_seed: list[dict]) -> dict[str, float]:
    """Aggregate per-seed ``metrics.json`` dicts: the mean over seeds of each number, and for
    the test metrics ``test_<metric>_std`` = sample std over seeds of the per-seed means
    (:func:`crfm_bench.metrics.summarise` over one row per seed)."""
    from crfm_bench.metrics import summarise

    means = pd.DataFrame(
        [
            {"model": "m", **{m: s.get(f"test_{m}_mean", np.nan) for m in METRIC_NAMES}}
            for s in per_seed
        ]
    )
    row = summarise(means, by="model").iloc[0]
    numeric = {
        k
        for s in per_seed
        for k, v in s.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    out = {k: float(np.mean([s[k] for s in per_seed if k in s])) for k in sorted(numeric)}
    for m in METRIC_NAMES:
        out.pop(f"test_{m}_std", None)
        if np.isfinite(row.get(f"{m}_std", np.nan)):
            out[f"test_{m}_std"] = float(row[f"{m}_std"])
    out["seeds"] = float(len(per_seed))
    return out


def model_dir(params: Params, name: str) -> Path:
    """Stable output folder of a model's result: ``<runs_dir>/models/<name>`` (a DVC output)."""
    return params.paths.runs_dir / "models" / name


def read_metrics(folder: Path) -> dict:
    """``folder/metrics.json``; a corrupt file is one InputError naming it."""
    path = Path(folder) / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _link_tree(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` with hard links where possible (no second copy on disk)."""

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link)


def restore_outputs(
    client, run_id: str, dest: Path, key: str | None = None, local: Path | None = None
) -> bool:
    """Bring a finished run's output folder to ``dest`` if it is missing there: from ``local``
    when that folder holds the result of run key ``key`` (seed 1 of a multi-seed run reusing
    a single-seed run's folder), else from MLflow."""
    if (dest / "metrics.json").is_file() and (
        key is None or read_metrics(dest).get("run_key") == key
    ):
        return False
    from crfm_bench.atomic import atomic_dir

    if local is not None and Path(local).resolve() == Path(dest).resolve():
        local = None

    with atomic_dir(dest) as stage:
        if local is not None and key and (local / "metrics.json").is_file():
            if read_metrics(local).get("run_key") == key:
                stage.rmdir()
                _link_tree(local, stage)
                return True
        dl = stage.parent / f".{dest.name}.dl"
        shutil.rmtree(dl, ignore_errors=True)
        local_dl = client.download_artifacts(run_id, "", str(dl))
        for item in Path(local_dl).iterdir():
            item.rename(stage / item.name)
        shutil.rmtree(dl, ignore_errors=True)
        regzip(stage)
    return True


def regzip(folder: Path) -> int:
    """Gzip again every ``*.gz`` file under ``folder`` that arrives uncompressed; return how
    many.

    MLflow's S3 store uploads a ``.nii.gz`` with ``Content-Encoding: gzip`` (guessed from the
    name), and an HTTP download through the tracking server then inflates it on the way:
    the voxels arrive intact, but a file named ``.gz`` that is not gzip is unreadable. A
    server started with ``MLFLOW_S3_UPLOAD_EXTRA_ARGS='{"ContentEncoding": "identity"}'``
    stores them as they are (docs/cluster.md); this repairs what other servers return.
    """
    import gzip

    count = 0
    for path in folder.rglob("*.gz"):
        with path.open("rb") as f:
            if f.read(2) == b"\x1f\x8b":
                continue
        tmp = path.with_name(path.name + ".tmp")
        with path.open("rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(path)
        count += 1
    return count


FigureHook = Callable[[Path, str], Callable | None]


class BenchmarkRun:
    """One ``crfm-bench run``: an MLflow parent run and, per model, a child run.

    ``board``: a :class:`~crfm_bench.engine.progress.ProgressBoard` showing each training's
    epochs (None: silent). ``figure_hook(out_dir, name)``: returns the ``on_prediction`` hook
    of :func:`~crfm_bench.engine.evaluate.evaluate_cases` for a model's output folder (the
    workflow draws ``slices.png`` with it; the engine draws nothing).
    """

    def __init__(
        self,
        params: Params,
        force: bool,
        address: str | None,
        console,
        board=None,
        figure_hook: FigureHook | None = None,
    ) -> None:
        from crfm_bench.engine.data import load_cases

        self.params = params
        self.force = force
        self.address = address
        self.console = console
        self.board = board
        self.figure_hook = figure_hook
        self.setting = open_setting(params)
        self.client = self.setting.client
        self.uri = tracking_uri(params.tracking)
        self.test_cases = load_cases(params, ("test",))
        self.cases_ref = None
        self.parent_id: str | None = None

    def open_parent(self, names: list[str]) -> str:
        run = self.client.create_run(
            self.setting.experiment_id,
            run_name=f"run-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={
                KIND_TAG: "benchmark",
                DATA_TAG: self.setting.dataset_version,
                SPEC_TAG: self.setting.spec_hash,
                "git_commit": git_commit() or "unknown",
                "models": ",".join(names),
                "seeds": str(self.params.train.seeds),
            },
        )
        self.parent_id = run.info.run_id
        self.client.log_dict(
            self.parent_id, json.loads(self.params.model_dump_json()), "params.json"
        )
        return self.parent_id

    def record(self, name: str, key: str, run_id: str, **extra) -> dict:
        """The identity part of a result's ``metrics.json``: model, run key and id, metric
        contract, dataset version, setting, plus ``extra``."""
        return {
            "model": name,
            "run_key": key,
            "run_id": run_id,
            "metric_spec_hash": self.setting.spec_hash,
            "dataset_version": self.setting.dataset_version,
            "task": self.params.task.model_dump(mode="json"),
            **extra,
        }

    def _label(self, name: str, seed: int | None) -> str:
        return name if seed is None else f"{name} (seed {seed})"

    def child_run(
        self,
        name: str,
        key: str,
        payload: dict,
        parent: str,
        dest: Path,
        seed: int | None = None,
        kind: str = "model",
        extra_tags: dict | None = None,
    ) -> tuple[str, bool]:
        """``(run id, fresh)``: a finished run with ``key`` is reused (fresh False; its outputs
        restored to ``dest`` if missing), an interrupted one resumed, else one created under
        ``parent``."""
        from mlflow.entities import Param

        from crfm_bench.models import model_info

        label = self._label(name, seed)
        previous = find_model_runs(self.client, self.setting.experiment_id, key)
        finished = [r for r in previous if r.info.status == "FINISHED"]
        if finished and not self.force:
            run_id = finished[0].info.run_id
            local = model_dir(self.params, name)
            restored = restore_outputs(self.client, run_id, dest, key, local)
            note = ", outputs restored" if restored else ""
            self.console.print(
                f"[green]{label}[/green]: finished run with key {key} found, reused{note}"
            )
            return run_id, False
        resumable = [r for r in previous if r.info.status != "FINISHED"]
        if resumable and not self.force:
            run_id = resumable[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.console.print(f"[yellow]{label}[/yellow]: resuming interrupted run {run_id}")
            return run_id, True
        tags = {
            "mlflow.parentRunId": parent,
            KIND_TAG: kind,
            MODEL_TAG: name,
            RUN_KEY_TAG: key,
            SPEC_TAG: self.setting.spec_hash,
            DATA_TAG: self.setting.dataset_version,
            "lr_version": self.setting.lr_version,
            "code_version": payload["code_version"],
            "git_commit": git_commit() or "unknown",
            "family": model_info(name).family,
            **(extra_tags or {}),
        }
        if seed is not None:
            tags[SEED_TAG] = str(seed)
        run = self.client.create_run(
            self.setting.experiment_id, run_name=self._label(name, seed), tags=tags
        )
        self.client.log_batch(
            run.info.run_id, params=[Param(k, v) for k, v in _flat("", payload).items()]
        )
        return run.info.run_id, True

    def train(
        self, name: str, key: str, run_id: str, model: torch.nn.Module, seed: int | None
    ) -> tuple[float, dict]:
        """Train on Ray Train; load the final weights into ``model``; (seconds, final state)."""
        import ray

        from crfm_bench.cluster import ensure_ray
        from crfm_bench.engine.data import load_cases
        from crfm_bench.engine.state import load_state, restore_state
        from crfm_bench.engine.trainer import fit_model

        where = ensure_ray(self.params.ray, self.address)
        if self.cases_ref is None:
            self.cases_ref = ray.put(
                (load_cases(self.params, ("train",)), load_cases(self.params, ("val",)))
            )
        label = self._label(name, seed)
        ray_name = f"{name}-{key}" + (f"-{int(time.time())}" if self.force else "")
        self.console.print(f"[bold]{label}[/bold]: training on {where} (Ray run {ray_name})")
        epochs = self.params.model_config_for(name).epochs or self.params.train.epochs
        t0 = time.perf_counter()
        with self._progress(label, epochs) as callbacks:
            result = fit_model(
                self.params,
                name,
                self.cases_ref,
                ray_name,
                self.uri,
                run_id,
                pid_dir=(self.params.paths.runs_dir / "pids" / ray_name).resolve(),
                callbacks=callbacks,
                seed=seed,
            )
        seconds = time.perf_counter() - t0
        if result.checkpoint is None:
            raise RuntimeError(f"{label}: training reported no checkpoint")
        state = load_state(result.checkpoint)
        restore_state(state, model)
        return seconds, state

    def _progress(self, label: str, epochs: int):
        import contextlib

        if self.board is None:
            return contextlib.nullcontext([])
        from crfm_bench.engine.progress import relayed

        return relayed(self.board, label, epochs)

    def history(self, run_id: str) -> pd.DataFrame:
        """Per-epoch training metrics of a run, from MLflow (one row per epoch)."""
        cols: dict[str, dict[int, float]] = {}
        for key in ("train_loss", "val_psnr", "epoch_seconds", "lr", "resumed_from"):
            for m in self.client.get_metric_history(run_id, key):
                cols.setdefault(key, {})[m.step] = m.value
        if not cols:
            return pd.DataFrame(columns=["epoch", "train_loss", "val_psnr"])
        df = pd.DataFrame(cols)
        df.index.name = "epoch"
        return df.sort_index().reset_index()

    def _fail(self, run_id: str, exc: BaseException) -> None:
        interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
        self.client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")
        if isinstance(exc, SystemExit):  # Ray's SIGINT handler exits; surface as interrupt
            raise KeyboardInterrupt from None

    def run_model(self, name: str) -> dict:
        """Train (if trainable; once per seed), evaluate, write ``runs/models/<name>``, log;
        or reuse. Returns the model's ``metrics.json``."""
        from crfm_bench.models import model_info

        seeds = seed_list(self.params)
        if len(seeds) == 1 or not model_info(name).trainable:
            return self.run_one(name, None, model_dir(self.params, name), self.parent_id)
        return self.run_seeds(name, seeds)

    def run_one(
        self,
        name: str,
        seed: int | None,
        dest: Path,
        parent: str,
        kind: str = "model",
    ) -> dict:
        """One trained (or reused) result in ``dest``: ``metrics.json``, ``per_subject.csv``,
        ``history.csv``, ``predictions/``, ``checkpoint/``."""
        from mlflow.entities import Metric

        from crfm_bench.atomic import atomic_dir
        from crfm_bench.engine.evaluate import evaluate_cases
        from crfm_bench.engine.state import CHECKPOINT_FILE
        from crfm_bench.models import model_info

        payload = model_payload(self.params, name, self.setting, seed)
        key = run_key(payload)
        run_id, fresh = self.child_run(name, key, payload, parent, dest, seed, kind)
        if not fresh:
            return read_metrics(dest)
        label = self._label(name, seed)
        try:
            model = build_model(self.params, name)
            train_seconds, state = 0.0, None
            if model_info(name).trainable:
                train_seconds, state = self.train(name, key, run_id, model, seed)
            self.console.print(
                f"[bold]{label}[/bold]: evaluating on {len(self.test_cases)} test volumes"
            )
            with atomic_dir(dest) as out:
                hook = self.figure_hook(out, label) if self.figure_hook else None
                per_subject = evaluate_cases(
                    model,
                    name,
                    self.test_cases,
                    self.params,
                    out_dir=out / "predictions",
                    on_prediction=hook,
                )
                metrics = {
                    "train_seconds": train_seconds,
                    "infer_seconds_per_volume": float(per_subject["infer_seconds"].mean()),
                    **subject_summary(per_subject),
                    **efficiency(model, self.params, self.test_cases[0].hr.shape, name),
                }
                per_subject.to_csv(out / "per_subject.csv", index=False)
                self.history(run_id).to_csv(out / "history.csv", index=False)
                record = (
                    self.record(
                        name, key, run_id, seed=self.params.train.seed if seed is None else seed
                    )
                    | metrics
                )
                (out / "metrics.json").write_text(
                    json.dumps(record, indent=2, sort_keys=True) + "\n"
                )
                if state is not None:
                    (out / "checkpoint").mkdir()
                    torch.save(state, out / "checkpoint" / CHECKPOINT_FILE)
                now = int(time.time() * 1000)
                self.client.log_batch(
                    run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
                )
                # the whole output folder once, at the artifact root (restore_outputs)
                self.client.log_artifacts(run_id, str(out))
            self.client.set_terminated(run_id, "FINISHED")
            self.console.print(
                f"[green]{label}[/green]: PSNR {metrics['test_psnr_mean']:.2f} dB, "
                f"SSIM {metrics['test_ssim_mean']:.4f}"
            )
            return record
        except BaseException as exc:
            self._fail(run_id, exc)
            raise

    def run_seeds(self, name: str, seeds: list[int]) -> dict:
        """Every seed of ``name`` (each a run nested under the model's run), then the
        aggregate in ``runs/models/<name>/`` (see the module doc)."""
        from mlflow.entities import Metric, Param

        from crfm_bench.atomic import atomic_dir

        dest = model_dir(self.params, name)
        payload = {**model_payload(self.params, name, self.setting), "seeds": seeds}
        key = run_key(payload)
        run_id, fresh = self.child_run(
            name, key, payload, self.parent_id, dest, extra_tags={"seeds": str(len(seeds))}
        )
        if not fresh:
            return read_metrics(dest)
        staging = self.params.paths.runs_dir / "seeds" / name
        try:
            records = []
            for k, seed in enumerate(seeds, start=1):
                records.append(self.run_one(name, seed, staging / f"seed-{k}", run_id, "seed"))
            with atomic_dir(dest) as out:
                for k in range(1, len(seeds) + 1):
                    _link_tree(staging / f"seed-{k}", out / f"seed-{k}")
                per_subject = pd.concat(
                    [
                        pd.read_csv(out / f"seed-{k}" / "per_subject.csv")
                        for k in range(1, len(seeds) + 1)
                    ]
                )
                numeric = [c for c in per_subject.columns if c not in ("model", "subject")]
                per_subject = (
                    per_subject.groupby("subject", sort=True)[numeric].mean().reset_index()
                )
                per_subject.insert(0, "model", name)
                per_subject.to_csv(out / "per_subject.csv", index=False)
                shutil.copy2(out / "seed-1" / "history.csv", out / "history.csv")
                if (out / "seed-1" / "slices.png").is_file():
                    shutil.copy2(out / "seed-1" / "slices.png", out / "slices.png")
                metrics = seed_summary([{k: v for k, v in r.items()} for r in records])
                metrics["test_n_subjects"] = float(len(per_subject))
                metrics.pop("seed", None)
                record = (
                    self.record(
                        name, key, run_id, seed_list=seeds, seed_runs=[r["run_id"] for r in records]
                    )
                    | metrics
                )
                (out / "metrics.json").write_text(
                    json.dumps(record, indent=2, sort_keys=True) + "\n"
                )
                now = int(time.time() * 1000)
                self.client.log_batch(
                    run_id,
                    metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                    params=[Param("seed_runs", ",".join(record["seed_runs"]))],
                )
                self.client.log_artifacts(run_id, str(out))
            self.client.set_terminated(run_id, "FINISHED")
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # runs/seeds, once no model stages there
            psnr_std = metrics.get("test_psnr_std", float("nan"))
            self.console.print(
                f"[green]{name}[/green]: {len(seeds)} seeds, PSNR "
                f"{metrics['test_psnr_mean']:.2f} ± {psnr_std:.2f} dB over seeds"
            )
            return record
        except BaseException as exc:
            self._fail(run_id, exc)
            raise


@dataclass
class RunOutcome:
    """What :func:`run_benchmark` leaves for the layers above (leaderboard, report)."""

    setting: Setting
    parent_id: str
    models: list[str]
    records: dict[str, dict]
    status: str


def run_benchmark(
    params: Params,
    models: list[str] | None = None,
    force: bool = False,
    address: str | None = None,
    console=None,
    board=None,
    figure_hook: FigureHook | None = None,
) -> RunOutcome:
    """Train (where needed) and evaluate ``models`` (default ``benchmark.models``) under one
    MLflow parent run, which is terminated on return (FINISHED, FAILED or KILLED)."""
    from rich.console import Console

    from crfm_bench.cluster import check_worker_group_fits
    from crfm_bench.models import model_info
    from crfm_bench.models.registry import applicable_models

    console = console or Console()
    if address:  # --address reaches every step that starts Ray (the degrade stage too)
        params = params.model_copy(
            update={"ray": params.ray.model_copy(update={"address": address})}
        )
    requested = models
    if not requested:  # benchmark.models: a model not meant for the task's domain is dropped
        requested, dropped = applicable_models(params.benchmark.models, params.task.domain)
        if dropped:
            console.print(
                f"note: {', '.join(dropped)} left out of benchmark.models "
                f"(not a baseline of task.domain {params.task.domain})"
            )
    names = validate_models(requested, params)
    if any(model_info(n).trainable for n in names):
        check_worker_group_fits(params, address)
    bench = BenchmarkRun(params, force, address, console, board, figure_hook)
    seeds = params.train.seeds
    console.print(
        f"[bold]setting[/bold] {bench.setting.experiment}  ({len(bench.test_cases)} test "
        f"subjects, models: {', '.join(names)}"
        + (f", {seeds} seeds each" if seeds > 1 else "")
        + ")"
    )
    parent_id = bench.open_parent(names)
    status = "FAILED"
    records: dict[str, dict] = {}
    try:
        for name in names:
            records[name] = bench.run_model(name)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if board is not None:
            board.stop()
        bench.client.set_terminated(parent_id, status)
    return RunOutcome(bench.setting, parent_id, names, records, status)
