"""``crfm-bench``: the command line. Thin: every command parses, loads ``params.yaml``, calls one
library function and prints. Heavy imports (torch, ray, mlflow) stay inside the commands so
``crfm-bench --help`` is instant.

User-caused errors (:class:`crfm_bench.errors.CrfmBenchError`) are caught once, in
:func:`main`, and printed as one line with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from crfm_bench.errors import CrfmBenchError
from crfm_bench.stackenv import apply_defaults

apply_defaults()

app = typer.Typer(
    name="crfm-bench",
    help="Benchmark and dataset management for reference-guided 3D brain MRI super-resolution.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build, ingest and inspect datasets.", no_args_is_help=True)
models_app = typer.Typer(help="The model zoo.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

ParamsOpt = Annotated[
    Path,
    typer.Option("--params", "-p", help="Parameters file.", show_default=True),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-S", help="Override a parameter: -S key.path=value (as `dvc exp run -S`)."
    ),
]


def _params(params: Path, overrides: list[str] | None):
    from crfm_bench.config import load_params

    return load_params(params, overrides or [])


def _console():
    """A rich console; wide when output is not a terminal (logs, CI), so tables stay readable."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _version(value: bool) -> None:
    if value:
        from crfm_bench import __version__

        typer.echo(f"crfm-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Benchmark and dataset management for reference-guided 3D brain MRI super-resolution.

    Example: [bold]crfm-bench run --models crfm,edsr[/bold]
    """
    from crfm_bench.engine.memory import malloc_mode

    malloc_mode()  # a bad CRFM_BENCH_MALLOC is one line before any command starts work


@data_app.command("synth")
def data_synth(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Synthesise the embedded multi-contrast dataset from the ICBM 2009a template.

    Example: [bold]crfm-bench data synth -S synth.n_subjects=8[/bold]
    """
    from crfm_bench.data.synth import synthesize_dataset

    p = _params(params, set_)
    manifest = synthesize_dataset(p.synth, p.paths.data_dir / "hr", progress=True)
    typer.echo(f"wrote {len(manifest)} volumes to {p.paths.data_dir / 'hr'}")


@data_app.command("ingest")
def data_ingest(
    kind: Annotated[
        str | None,
        typer.Argument(help="Dataset layout: ixi, brats or bids (default: ingest.kind)."),
    ] = None,
    src: Annotated[
        Path | None, typer.Argument(help="Root folder of the dataset (default: ingest.raw_dir).")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Grid to bring every contrast onto (default: ingest.target).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Build the HR manifest from an IXI, BraTS (2020/2023) or BIDS tree.

    Example: [bold]crfm-bench data ingest ixi /data/IXI --target T2w[/bold]
    """
    from crfm_bench.data.ingest import ingest_dataset
    from crfm_bench.errors import InputError

    p = _params(params, set_)
    kind = kind or p.ingest.kind
    src = src or p.ingest.raw_dir
    if kind is None or src is None:
        raise InputError("data ingest: give KIND and SRC, or set ingest.kind and ingest.raw_dir")
    report = ingest_dataset(
        kind,
        src,
        p.paths.data_dir / "hr",
        target=target or p.ingest.target,
        contrasts=p.ingest.contrasts,
        seed=p.seed,
        val_fraction=p.ingest.val_fraction,
        test_fraction=p.ingest.test_fraction,
        shape_multiple=p.ingest.shape_multiple,
    )
    typer.echo(report.summary())


@data_app.command("info")
def data_info(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Print the dataset version, subjects, contrasts, splits and degradations.

    Example: [bold]crfm-bench data info[/bold]
    """
    from crfm_bench.data.info import print_info

    p = _params(params, set_)
    print_info(p.paths.data_dir, console=_console())


@app.command("degrade")
def degrade(
    domain: Annotated[
        str | None, typer.Option(help="kspace or image (default: every degrade.domains).")
    ] = None,
    scale: Annotated[
        str | None, typer.Option(help="e.g. 2 or 1x1x4 (default: every degrade.scales).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Make LR volumes from the HR dataset, one folder per (domain, scale).

    Example: [bold]crfm-bench degrade --domain kspace --scale 1x1x4[/bold]
    """
    from crfm_bench.degrade.stage import degrade_dataset

    p = _params(params, set_)
    for out in degrade_dataset(p, domain=domain, scale=scale, progress=True):
        typer.echo(f"wrote {out}")


@models_app.command("list")
def models_list(
    pattern: Annotated[str | None, typer.Argument(help="Glob filter, e.g. 'crfm*'.")] = None,
    scale: Annotated[
        str | None, typer.Option(help="Scale used to count parameters (default: task.scale).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """List the models as the benchmark configures them: size, parameters (of every size),
    global residual, loss, whether it reads the reference, citation.

    Reads params.yaml (benchmark.residual, models.<name>.size/options) if it exists.
    Example: [bold]crfm-bench models list 'crfm*' -S benchmark.residual=none[/bold]
    """
    from rich.table import Table

    from crfm_bench.config import load_params
    from crfm_bench.models import list_models, model_table

    p = load_params(params if params.is_file() else None, overrides or [])
    names = list_models(pattern) if pattern else list_models()
    configs = {}
    from crfm_bench.engine.build import model_options

    for name in names:
        configs[name] = (p.model_config_for(name).size, model_options(p, name))
    table = model_table(spatial_dims=3, scale=scale or p.task.scale, configs=configs, names=names)
    out = Table(title=f"crfm-bench models (3D, x{scale or p.task.scale})")
    for col in (
        "name", "size", "params", "tiny / base / paper", "residual", "loss",
        "reference", "trainable", "description",
    ):  # fmt: skip
        out.add_column(col, overflow="fold")
    for r in table.itertuples():
        out.add_row(
            r.name,
            r.size,
            f"{r.params:,}",
            f"{r.params_tiny:,} / {r.params_base:,} / {r.params_paper:,}",
            r.residual,
            r.loss,
            "y" if r.needs_reference else "n",
            "y" if r.trainable else "n",
            r.description,
        )
    _console().print(out)


@app.command("run")
def run(
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated model names (default: benchmark.models)."),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Training seeds per model (default: train.seeds); the leaderboard gives "
            "mean ± std over seeds.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Retrain even if a finished run exists.")] = False,
    leaderboard: Annotated[
        bool, typer.Option(help="Print and write the leaderboard at the end.")
    ] = True,
    report: Annotated[
        bool, typer.Option(help="Write reports/index.html and index.md at the end.")
    ] = True,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")
    ] = None,
    test_data: Annotated[
        Path | None,
        typer.Option(
            help="Also test on another ingested dataset folder's test split (task.test_data)."
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Train and evaluate models on the benchmark setting; print the leaderboard and write
    the report.

    Builds the embedded dataset and its degradations first if they are missing. Finished
    runs with the same configuration, data and code are reused; an interrupted run resumes.

    Example: [bold]crfm-bench run --models crfm,edsr --seeds 3[/bold]
    """
    from crfm_bench import workflow
    from crfm_bench.report.leaderboard import render
    from crfm_bench.tracking import tracking_uri

    overrides = list(set_ or []) + ([f"train.seeds={seeds}"] if seeds is not None else [])
    p = _params(params, overrides)
    names = models.split(",") if models else None
    console = _console()
    test_data = test_data or p.task.test_data
    if test_data is not None:
        from crfm_bench.engine.crossdata import check_test_data

        check_test_data(p, test_data)  # before any training
    result = workflow.run(
        p,
        names,
        force=force,
        address=address,
        console=console,
        leaderboard=leaderboard,
        report=report,
    )
    if leaderboard and not result.board.empty:
        console.print(render(result.board, title=result.title))
        console.print(f"wrote {p.paths.reports_dir / 'leaderboard.md'}")
    if result.report is not None:
        path = result.report.resolve()
        console.print(f"report: {path} (and {path.with_suffix('.md').name})", soft_wrap=True)
    if test_data is not None:
        from crfm_bench.engine.run import validate_models

        cross = workflow.cross(
            p,
            validate_models(names or p.benchmark.models, p),
            test_data,
            force,
            console,
            leaderboard=leaderboard,
        )
        if leaderboard and not cross.empty:
            console.print(render(cross, title=f"tested on {test_data}"))
    uri = tracking_uri(p.tracking)
    console.print(f"browse the runs: [bold]mlflow ui --backend-store-uri {uri}[/bold]")


@app.command("leaderboard")
def leaderboard(
    from_outputs: Annotated[
        bool,
        typer.Option(
            "--from-outputs",
            help="Rank the model outputs under runs/models (what DVC versions) instead of MLflow.",
        ),
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Rank the finished model runs of the setting from MLflow; write reports/leaderboard.*.

    Reads only: builds no data (run `crfm-bench run` first).

    Example: [bold]crfm-bench leaderboard -S task.scale=1x1x4[/bold]
    """
    from crfm_bench.report import leaderboard as lb

    p = _params(params, set_)
    console = _console()
    if from_outputs:
        from crfm_bench.data.manifest import manifest_version
        from crfm_bench.errors import MissingInputError
        from crfm_bench.metrics import metric_spec, metric_spec_hash

        title = p.task.title()
        manifest = p.paths.data_dir / "hr" / "manifest.csv"
        board = lb.from_model_dirs(
            p.paths.runs_dir / "models",
            metric_spec_hash(metric_spec(p.eval.slice_axis)),
            task=p.task.model_dump(mode="json"),
            dataset_version=manifest_version(manifest) if manifest.is_file() else None,
        )
        if board.empty:
            raise MissingInputError(
                f"{p.paths.runs_dir / 'models'}: no model results (crfm-bench run)"
            )
        lb.write(board, p.paths.reports_dir, title=title)
        if p.task.test_data is not None:
            cross = lb.crossdata_from_outputs(p, p.task.test_data)
            console.print(lb.render(cross, title=f"tested on {p.task.test_data}"))
    else:
        from crfm_bench import workflow

        result = workflow.leaderboard(p)
        board, title = result.board, result.title
        if board.empty:
            console.print(f"no finished runs yet in {title}: crfm-bench run")
            return
    console.print(lb.render(board, title=title))
    console.print(f"wrote {p.paths.reports_dir / 'leaderboard.md'}")


@app.command("code-version")
def code_version_cmd(
    out: Annotated[
        Path | None, typer.Option(help="Also write it to this file (a DVC dependency).")
    ] = None,
) -> None:
    """Print the hash of the code a trained result depends on (part of every run key).

    Example: [bold]crfm-bench code-version --out runs/code_version.txt[/bold]
    """
    from crfm_bench.tracking import code_version

    version = code_version()
    if out is not None:
        from crfm_bench.atomic import atomic_write_text

        atomic_write_text(out, version + "\n")
    typer.echo(version)


@app.command("report")
def report(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Write reports/index.md and a self-contained reports/index.html from the model results.

    Leaderboard, metric contract, significance tests (paired Wilcoxon, bootstrap CI), box
    plots, training curves and slice figures of every model under runs/models.

    Example: [bold]crfm-bench report[/bold]
    """
    from crfm_bench.report.build import build_report

    p = _params(params, set_)
    path = build_report(p)
    typer.echo(f"wrote {path} and {path.with_suffix('.md')}")


@app.command("ablation")
def ablation(
    reference: Annotated[str, typer.Option(help="The full model.")] = "crfm",
    ablations: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated ablations (default: crfm-noref, crfm-nograd, crfm-nofmp, "
            "crfm-fmp-xscale, crfm-fmp-xmod)."
        ),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(min=1, help="Training seeds of the results (default: train.seeds)."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Write reports/ablation.{md,html,json}: per part of crfm, the mean ΔPSNR/ΔSSIM
    (crfm minus the ablation, paired by subject and seed) with a 95 % interval and a verdict.

    Reads the finished results under runs/models (crfm-bench run --seeds N); reads only.
    Example: [bold]crfm-bench ablation --seeds 3[/bold]
    """
    from crfm_bench.report.ablation import ablation_report

    overrides = list(set_ or []) + ([f"train.seeds={seeds}"] if seeds is not None else [])
    p = _params(params, overrides)
    names = [n.strip() for n in ablations.split(",") if n.strip()] if ablations else None
    path = ablation_report(p, reference=reference, ablations=names)
    md = path.with_suffix(".md")
    typer.echo(md.read_text())
    typer.echo(f"wrote {path}, {md.name} and {path.with_suffix('.json').name}")


@app.command("score")
def score(
    pred_dir: Annotated[
        Path | None,
        typer.Argument(help="Folder with one <subject>_sr.nii.gz per test subject."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Method name shown on the leaderboard (marked external).")
    ] = None,
    method_params: Annotated[
        str | None,
        typer.Option(help="The method's parameters as a JSON object (provenance only)."),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Paper or code URL (provenance).")] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Instead: write the test split's inputs and a README to this zip."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Score another method's predictions under the metric contract, or export its inputs.

    The predictions are checked against the HR grid (shape, affine), dtype and finiteness
    first; a bad file is one line naming it and exit code 2, with nothing logged.

    Example: [bold]crfm-bench score --export test-inputs.zip[/bold], then
    [bold]crfm-bench score preds/ --name mymethod --url https://github.com/me/mymethod[/bold]
    """
    from crfm_bench.errors import InputError

    p = _params(params, set_)
    console = _console()
    if export is not None:
        from crfm_bench.engine.export import export_test_split

        if pred_dir is not None or name is not None:
            raise InputError("score --export: give no PRED_DIR or --name with --export")
        console.print(f"wrote {export_test_split(p, export)}")
        return
    from crfm_bench import workflow
    from crfm_bench.engine.score import parse_method_params
    from crfm_bench.report.leaderboard import render

    if pred_dir is None or name is None:
        raise InputError("score: give PRED_DIR and --name (or --export ZIP)")
    _, board = workflow.score(
        p,
        pred_dir,
        name,
        method_params=parse_method_params(method_params),
        url=url,
        console=console,
    )
    if not board.empty:
        console.print(render(board))
        console.print(f"wrote {p.paths.reports_dir / 'leaderboard.md'}")


@app.command("tune")
def tune(
    model: Annotated[str | None, typer.Option(help="Model to tune (default: tune.model).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Search hyper-parameters with Ray Tune (ASHA) over tune.space; save the best as params.

    Example: [bold]crfm-bench tune --model crfm -S tune.num_samples=8[/bold]
    then [bold]crfm-bench run --params reports/tune/crfm-best.yaml --models crfm[/bold]
    """
    from crfm_bench.engine.tune import tune_model

    p = _params(params, set_)
    console = _console()
    values, score, path = tune_model(p, model, address=address, console=console, progress=True)
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    console.print(f"best: {shown}  (val PSNR {score:.2f} dB)")
    console.print(f"wrote {path}: crfm-bench run --params {path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; print user-caused errors as one line, exit code 2.

    Usage errors (unknown command or option) are click's, also exit code 2.
    """
    try:
        app(args=argv, prog_name="crfm-bench")
    except CrfmBenchError as err:
        typer.echo(f"crfm-bench: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("crfm-bench: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
