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
import tempfile
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
    """Known model names, each once; reference models only with ``task.reference`` set.

    Each model is built once with its configured size and options, so a bad option is
    reported before any data, tracking or training work starts.
    """
    from crfm_bench.models import create_model, list_models, model_info
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
    from crfm_bench.metrics import metric_spec_hash

    client = setup_tracking(params.tracking)
    ensure_data(params)
    version = manifest_version(params.paths.data_dir / "hr" / "manifest.csv")
    lr_version = manifest_version(lr_dir(params) / "manifest.csv")
    name = experiment_name(params, version)
    exp_id = get_or_create_experiment(client, name, params.tracking.artifact_location)
    return Setting(client, exp_id, name, version, lr_version, metric_spec_hash())


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


def _load_checkpoint(model: torch.nn.Module, checkpoint) -> Path:
    from crfm_bench.engine.loop import CHECKPOINT_FILE

    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return Path(checkpoint.path) / CHECKPOINT_FILE


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


def run_benchmark(
    params: Params,
    models: list[str] | None = None,
    force: bool = False,
    address: str | None = None,
    console=None,
) -> pd.DataFrame:
    """Train (where needed) and evaluate ``models``; return the leaderboard of the setting."""
    from rich.console import Console

    from crfm_bench.engine.data import load_cases
    from crfm_bench.engine.evaluate import evaluate_cases
    from crfm_bench.metrics import summarise
    from crfm_bench.models import create_model, model_info
    from crfm_bench.scale import parse_scale

    console = console or Console()
    names = validate_models(models or params.benchmark.models, params)
    setting = open_setting(params)
    client = setting.client
    uri = tracking_uri(params.tracking)
    scale = parse_scale(params.task.scale, what="task.scale")
    test_cases = load_cases(params, ("test",))
    console.print(
        f"[bold]setting[/bold] {setting.experiment}  ({len(test_cases)} test subjects, "
        f"models: {', '.join(names)})"
    )
    parent = client.create_run(
        setting.experiment_id,
        run_name=f"run-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            KIND_TAG: "benchmark",
            DATA_TAG: setting.dataset_version,
            SPEC_TAG: setting.spec_hash,
            "git_commit": git_commit() or "unknown",
            "models": ",".join(names),
        },
    )
    parent_id = parent.info.run_id
    client.log_dict(parent_id, json.loads(params.model_dump_json()), "params.json")
    cases_ref = None
    status = "FAILED"
    try:
        for name in names:
            info = model_info(name)
            key = run_key(model_payload(params, name, setting))
            previous = find_model_runs(client, setting.experiment_id, key)
            if any(r.info.status == "FINISHED" for r in previous) and not force:
                console.print(f"[green]{name}[/green]: finished run with key {key} found, reused")
                continue
            resumable = [r for r in previous if r.info.status != "FINISHED"]
            if resumable and not force:
                child_id = resumable[0].info.run_id
                client.update_run(child_id, status="RUNNING")
                console.print(f"[yellow]{name}[/yellow]: resuming interrupted run {child_id}")
            else:
                child = client.create_run(
                    setting.experiment_id,
                    run_name=name,
                    tags={
                        "mlflow.parentRunId": parent_id,
                        KIND_TAG: "model",
                        MODEL_TAG: name,
                        RUN_KEY_TAG: key,
                        SPEC_TAG: setting.spec_hash,
                        DATA_TAG: setting.dataset_version,
                        "lr_version": setting.lr_version,
                        "code_version": code_version(),
                        "git_commit": git_commit() or "unknown",
                        "family": info.family,
                    },
                )
                child_id = child.info.run_id
                payload = model_payload(params, name, setting)
                from mlflow.entities import Param

                client.log_batch(
                    child_id, params=[Param(k, v) for k, v in _flat("", payload).items()]
                )
            try:
                mcfg = params.model_config_for(name)
                model = create_model(
                    name, spatial_dims=3, scale=scale, size=mcfg.size, **mcfg.options
                )
                train_seconds = 0.0
                ckpt_file = None
                if info.trainable:
                    from crfm_bench.engine.cluster import ensure_ray
                    from crfm_bench.engine.trainer import fit_model

                    where = ensure_ray(params.ray, address)
                    if cases_ref is None:
                        import ray

                        cases_ref = ray.put(
                            (load_cases(params, ("train",)), load_cases(params, ("val",)))
                        )
                    ray_name = f"{name}-{key}" + (f"-{int(time.time())}" if force else "")
                    console.print(f"[bold]{name}[/bold]: training on {where} (Ray run {ray_name})")
                    t0 = time.perf_counter()
                    result = fit_model(
                        params,
                        name,
                        cases_ref,
                        ray_name,
                        uri,
                        child_id,
                        pid_dir=params.paths.runs_dir / "pids" / ray_name,
                    )
                    train_seconds = time.perf_counter() - t0
                    if result.checkpoint is None:
                        raise RuntimeError(f"{name}: training reported no checkpoint")
                    ckpt_file = _load_checkpoint(model, result.checkpoint)
                console.print(f"[bold]{name}[/bold]: evaluating on {len(test_cases)} test volumes")
                out_dir = params.paths.runs_dir / "eval" / f"{name}-{key}"
                per_subject = evaluate_cases(model, name, test_cases, params, out_dir=out_dir)
                summary = summarise(per_subject, by="model")
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
                metrics.update(efficiency(model, params, scale, test_cases[0].hr.shape))
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                client.log_batch(
                    child_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
                )
                with tempfile.TemporaryDirectory() as tmp:
                    csv = Path(tmp) / "per_subject.csv"
                    per_subject.to_csv(csv, index=False)
                    client.log_artifact(child_id, str(csv))
                    summary.to_csv(Path(tmp) / "summary.csv", index=False)
                    client.log_artifact(child_id, str(Path(tmp) / "summary.csv"))
                if (out_dir / "slices.png").is_file():
                    client.log_artifact(child_id, str(out_dir / "slices.png"))
                if ckpt_file is not None and ckpt_file.is_file():
                    client.log_artifact(child_id, str(ckpt_file), "checkpoint")
                client.set_terminated(child_id, "FINISHED")
                console.print(
                    f"[green]{name}[/green]: PSNR {metrics['test_psnr_mean']:.2f} dB, "
                    f"SSIM {metrics['test_ssim_mean']:.4f}"
                )
            except BaseException as exc:
                client.set_terminated(
                    child_id,
                    "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED",
                )
                if isinstance(exc, SystemExit):  # Ray's SIGINT handler exits; surface as interrupt
                    raise KeyboardInterrupt from None
                raise
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        board = leaderboard_for(params, setting, parent_id)
        client.set_terminated(parent_id, status)
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
