"""``crfm-bench run``: build missing data, train and evaluate models, rank them.

For each model: a run key (model config, training config, task, evaluation, dataset
version, code version, metric contract) decides whether a finished MLflow run can be
reused, an interrupted one resumed (Ray restores its checkpoint) or a new one started.
Training runs on Ray Train (:mod:`crfm_bench.engine.trainer`), evaluation on the test split
in this process (:mod:`crfm_bench.engine.evaluate`), and everything is logged to MLflow:
one parent run per invocation, one nested child run per model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crfm_bench.config import Params
from crfm_bench.data.manifest import manifest_version
from crfm_bench.engine.data import lr_dir
from crfm_bench.errors import InputError
from crfm_bench.tracking import (
    DATA_TAG,
    KIND_TAG,
    MODEL_TAG,
    RUN_KEY_TAG,
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
    experiment_id: str
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
    from crfm_bench.models import create_model, list_models, model_info
    from crfm_bench.models.registry import applicable_models
    from crfm_bench.scale import parse_scale

    scale = parse_scale(params.task.scale, what="task.scale")

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
        mcfg = params.model_config_for(name)
        create_model(name, spatial_dims=3, scale=scale, size=mcfg.size, **mcfg.options)
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


def open_setting(params: Params) -> Setting:
    """Check tracking first (before any work), then find or create the experiment."""
    from crfm_bench.metrics import metric_spec, metric_spec_hash

    client = setup_tracking(params.tracking)
    ensure_data(params)
    version = manifest_version(params.paths.data_dir / "hr" / "manifest.csv")
    lr_version = manifest_version(lr_dir(params) / "manifest.csv")
    name = experiment_name(params, version)
    exp_id = get_or_create_experiment(client, name, params.tracking.artifact_location)
    return Setting(
        client,
        exp_id,
        name,
        version,
        lr_version,
        metric_spec_hash(metric_spec(params.eval.slice_axis)),
    )


def model_payload(params: Params, name: str, setting: Setting) -> dict:
    """What identifies a model's result: a change in any of it means a new run."""
    train = params.train.model_dump(mode="json")
    for k in ("storage_path", "max_failures", "num_to_keep"):
        train.pop(k)
    return {
        "model": name,
        "model_config": params.model_config_for(name).model_dump(mode="json"),
        "train": train,
        "task": params.task.model_dump(mode="json"),
        "eval": params.eval.model_dump(mode="json"),
        "dataset_version": setting.dataset_version,
        "lr_version": setting.lr_version,
        "code_version": code_version(),
        "metric_spec_hash": setting.spec_hash,
    }


def _flat(prefix: str, tree: dict) -> dict[str, str]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(key + ".", v))
        else:
            out[key] = str(v)[:500]
    return out


def efficiency(model: torch.nn.Module, params: Params, scale: tuple[int, ...], hr_shape) -> dict:
    """Parameters, GMACs of one evaluation window, activation MB of one training patch."""
    from crfm_bench.engine.data import patch_shape
    from crfm_bench.engine.efficiency import activation_bytes, count_macs

    def sample(patch: int):
        p = patch_shape(tuple(hr_shape), patch, scale)
        lr = torch.rand(1, 1, *(n // s for n, s in zip(p, scale, strict=True)))
        ref = torch.rand(1, 1, *p) if getattr(model, "needs_reference", False) else None
        return lr, ref

    model = model.cpu()
    n_params = sum(p.numel() for p in model.parameters())
    out = {
        "params": float(n_params),
        "macs_g": count_macs(model.eval(), *sample(params.eval.window)) / 1e9,
    }
    if n_params:
        model.train()
        out["activation_mb"] = activation_bytes(model, *sample(params.train.patch_size)) / 2**20
        model.eval()
    return out


def model_dir(params: Params, name: str) -> Path:
    """Stable output folder of a model's result: ``<runs_dir>/models/<name>`` (a DVC output)."""
    return params.paths.runs_dir / "models" / name


def restore_outputs(client, run_id: str, dest: Path) -> bool:
    """Bring a finished run's output folder back from MLflow if it is missing locally."""
    if (dest / "metrics.json").is_file():
        return False
    from crfm_bench.atomic import atomic_dir

    with atomic_dir(dest) as stage:
        local = client.download_artifacts(run_id, "", str(stage.parent / f".{dest.name}.dl"))
        for item in Path(local).iterdir():
            item.rename(stage / item.name)
        Path(local).rmdir()
    return True


class BenchmarkRun:
    """One ``crfm-bench run``: an MLflow parent run and, per model, a child run."""

    def __init__(self, params: Params, force: bool, address: str | None, console) -> None:
        from crfm_bench.engine.data import load_cases
        from crfm_bench.scale import parse_scale

        self.params = params
        self.force = force
        self.address = address
        self.console = console
        self.setting = open_setting(params)
        self.client = self.setting.client
        self.uri = tracking_uri(params.tracking)
        self.scale = parse_scale(params.task.scale, what="task.scale")
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
            },
        )
        self.parent_id = run.info.run_id
        self.client.log_dict(
            self.parent_id, json.loads(self.params.model_dump_json()), "params.json"
        )
        return self.parent_id

    def child_run(self, name: str, key: str) -> str | None:
        """Run id to work in (new or resumed), or None when a finished run is reused."""
        from mlflow.entities import Param

        from crfm_bench.models import model_info

        previous = find_model_runs(self.client, self.setting.experiment_id, key)
        finished = [r for r in previous if r.info.status == "FINISHED"]
        if finished and not self.force:
            restored = restore_outputs(
                self.client, finished[0].info.run_id, model_dir(self.params, name)
            )
            note = ", outputs restored from MLflow" if restored else ""
            self.console.print(
                f"[green]{name}[/green]: finished run with key {key} found, reused{note}"
            )
            return None
        resumable = [r for r in previous if r.info.status != "FINISHED"]
        if resumable and not self.force:
            run_id = resumable[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.console.print(f"[yellow]{name}[/yellow]: resuming interrupted run {run_id}")
            return run_id
        payload = model_payload(self.params, name, self.setting)
        run = self.client.create_run(
            self.setting.experiment_id,
            run_name=name,
            tags={
                "mlflow.parentRunId": self.parent_id,
                KIND_TAG: "model",
                MODEL_TAG: name,
                RUN_KEY_TAG: key,
                SPEC_TAG: self.setting.spec_hash,
                DATA_TAG: self.setting.dataset_version,
                "lr_version": self.setting.lr_version,
                "code_version": payload["code_version"],
                "git_commit": git_commit() or "unknown",
                "family": model_info(name).family,
            },
        )
        self.client.log_batch(
            run.info.run_id, params=[Param(k, v) for k, v in _flat("", payload).items()]
        )
        return run.info.run_id

    def train(self, name: str, key: str, run_id: str, model: torch.nn.Module) -> tuple[float, dict]:
        """Train on Ray Train; load the final weights into ``model``; (seconds, final state)."""
        import ray

        from crfm_bench.engine.cluster import ensure_ray
        from crfm_bench.engine.data import load_cases
        from crfm_bench.engine.loop import load_state
        from crfm_bench.engine.trainer import fit_model

        where = ensure_ray(self.params.ray, self.address)
        if self.cases_ref is None:
            self.cases_ref = ray.put(
                (load_cases(self.params, ("train",)), load_cases(self.params, ("val",)))
            )
        ray_name = f"{name}-{key}" + (f"-{int(time.time())}" if self.force else "")
        self.console.print(f"[bold]{name}[/bold]: training on {where} (Ray run {ray_name})")
        t0 = time.perf_counter()
        result = fit_model(
            self.params,
            name,
            self.cases_ref,
            ray_name,
            self.uri,
            run_id,
            pid_dir=(self.params.paths.runs_dir / "pids" / ray_name).resolve(),
        )
        seconds = time.perf_counter() - t0
        if result.checkpoint is None:
            raise RuntimeError(f"{name}: training reported no checkpoint")
        state = load_state(result.checkpoint)
        model.load_state_dict(state["model"])
        return seconds, state

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

    def run_model(self, name: str) -> None:
        """Train (if trainable), evaluate, write ``runs/models/<name>``, log; or reuse."""
        from mlflow.entities import Metric

        from crfm_bench.atomic import atomic_dir
        from crfm_bench.engine.evaluate import evaluate_cases
        from crfm_bench.engine.loop import CHECKPOINT_FILE
        from crfm_bench.models import create_model, model_info

        key = run_key(model_payload(self.params, name, self.setting))
        run_id = self.child_run(name, key)
        if run_id is None:
            return
        try:
            mcfg = self.params.model_config_for(name)
            model = create_model(
                name, spatial_dims=3, scale=self.scale, size=mcfg.size, **mcfg.options
            )
            train_seconds, state = 0.0, None
            if model_info(name).trainable:
                train_seconds, state = self.train(name, key, run_id, model)
            self.console.print(
                f"[bold]{name}[/bold]: evaluating on {len(self.test_cases)} test volumes"
            )
            with atomic_dir(model_dir(self.params, name)) as out:
                per_subject = evaluate_cases(
                    model, name, self.test_cases, self.params, out_dir=out / "predictions"
                )
                metrics = {
                    "train_seconds": train_seconds,
                    "infer_seconds_per_volume": float(per_subject["infer_seconds"].mean()),
                    "test_n_subjects": float(len(per_subject)),
                }
                for q in ("psnr", "ssim", "psnr_masked", "ssim_masked", "ssim_slice", "nmse"):
                    metrics[f"test_{q}_mean"] = float(per_subject[q].mean())
                    metrics[f"test_{q}_std"] = (
                        float(per_subject[q].std(ddof=1)) if len(per_subject) > 1 else 0.0
                    )
                metrics.update(
                    efficiency(model, self.params, self.scale, self.test_cases[0].hr.shape)
                )
                if (out / "predictions" / "slices.png").is_file():
                    (out / "predictions" / "slices.png").rename(out / "slices.png")
                per_subject.to_csv(out / "per_subject.csv", index=False)
                self.history(run_id).to_csv(out / "history.csv", index=False)
                (out / "metrics.json").write_text(
                    json.dumps(
                        {
                            "model": name,
                            "run_key": key,
                            "run_id": run_id,
                            "metric_spec_hash": self.setting.spec_hash,
                            "dataset_version": self.setting.dataset_version,
                            "task": self.params.task.model_dump(mode="json"),
                            **metrics,
                        },
                        indent=2,
                        sort_keys=True,
                    )
                    + "\n"
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
                f"[green]{name}[/green]: PSNR {metrics['test_psnr_mean']:.2f} dB, "
                f"SSIM {metrics['test_ssim_mean']:.4f}"
            )
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
            self.client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")
            if isinstance(exc, SystemExit):  # Ray's SIGINT handler exits; surface as interrupt
                raise KeyboardInterrupt from None
            raise


def run_benchmark(
    params: Params,
    models: list[str] | None = None,
    force: bool = False,
    address: str | None = None,
    console=None,
    leaderboard: bool = True,
) -> pd.DataFrame:
    """Train (where needed) and evaluate ``models``; return the leaderboard of the setting
    (written to ``reports/`` and logged to the parent run unless ``leaderboard`` is False)."""
    from rich.console import Console

    from crfm_bench.engine.cluster import check_worker_group_fits
    from crfm_bench.models import model_info
    from crfm_bench.models.registry import applicable_models

    console = console or Console()
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
    bench = BenchmarkRun(params, force, address, console)
    console.print(
        f"[bold]setting[/bold] {bench.setting.experiment}  ({len(bench.test_cases)} test "
        f"subjects, models: {', '.join(names)})"
    )
    parent_id = bench.open_parent(names)
    status = "FAILED"
    try:
        for name in names:
            bench.run_model(name)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            board = (
                leaderboard_for(params, bench.setting, parent_id) if leaderboard else pd.DataFrame()
            )
        finally:  # the parent run never stays RUNNING, even if the leaderboard fails
            bench.client.set_terminated(parent_id, status)
    return board


def leaderboard_for(params: Params, setting: Setting, parent_id: str | None = None) -> pd.DataFrame:
    """Collect the setting's leaderboard, write ``reports/leaderboard.{csv,md}``, log it."""
    from crfm_bench.report import leaderboard

    board = leaderboard.collect(setting.client, setting.experiment_id, setting.spec_hash)
    if board.empty:
        return board
    leaderboard.write(board, params.paths.reports_dir, title=setting.experiment)
    if parent_id is not None:
        setting.client.log_table(
            parent_id, data=board.replace({np.nan: None}), artifact_file="leaderboard.json"
        )
        setting.client.log_text(
            parent_id, leaderboard.to_markdown(board, setting.experiment), "leaderboard.md"
        )
    return board
