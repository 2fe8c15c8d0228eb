"""The publishable report: ``reports/index.md`` and a self-contained ``reports/index.html``.

:func:`build_report` reads what ``crfm-bench run`` left in ``<runs_dir>/models/<name>/``
(``metrics.json``, ``per_subject.csv``, ``history.csv``, ``predictions/<subject>_sr.nii.gz``)
for **every model folder there** (sorted by name), plus the test cases of the setting, and
writes

* ``reports/figures/*.png`` (replaced as a whole, so no stale figure survives):
  ``metrics_box.png``, ``metrics_bar.png``, ``training_curves.png`` (only if a model trained),
  ``slices_<model>.png`` per ranked model, and ``slices.json`` (subject, slice indices, the
  shared colour scale and detail boxes of those figures);
* ``reports/significance.csv`` (:func:`crfm_bench.report.stats.compare_to_best`);
* ``reports/index.md`` (figures linked) and ``reports/index.html`` (one file: inline CSS,
  figures embedded as base64 ``data:`` URIs, no external URL).

Only models evaluated under the current metric contract (``metric_spec_hash`` of the spec with ``eval.slice_axis``) and, when
the HR manifest is present, on the current dataset version are ranked; the others are listed
as excluded with the reason. Both pages are rendered from one list of blocks, so they say
the same thing.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crfm_bench.atomic import atomic_dir, atomic_write_text, ensure_writable_dir
from crfm_bench.config import Params
from crfm_bench.errors import InputError, MissingInputError
from crfm_bench.report import figures, leaderboard, stats
from crfm_bench.report.leaderboard import QUALITY, fmt_num


@dataclass
class ModelResult:
    """One ``<runs_dir>/models/<name>/`` folder as read from disk."""

    name: str
    folder: Path
    metrics: dict
    per_subject: pd.DataFrame
    history: pd.DataFrame


@dataclass
class Excluded:
    """A model folder left out of the ranking, and why."""

    name: str
    reason: str


@dataclass
class Page:
    """Content of the report as blocks, rendered to Markdown and HTML alike.

    A block is ``("h1"|"h2"|"p"|"pre", text)``, ``("table", header, rows)`` or
    ``("img", relative_path, caption)``.
    """

    blocks: list[tuple] = field(default_factory=list)

    def add(self, *block) -> None:
        self.blocks.append(block)


# --- Reading runs ---------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None


def load_model_result(folder: Path) -> ModelResult:
    """Read one model folder; ``metrics.json`` and ``per_subject.csv`` are required."""
    folder = Path(folder)
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise MissingInputError(f"{metrics_file}: not found")
    metrics = _read_json(metrics_file)
    ps_file = folder / "per_subject.csv"
    if not ps_file.is_file():
        raise MissingInputError(f"{ps_file}: not found (written by crfm-bench run)")
    per_subject = _read_csv(ps_file)
    need = {"subject", *QUALITY}
    if not need <= set(per_subject.columns):
        missing = ", ".join(sorted(need - set(per_subject.columns)))
        raise InputError(f"{ps_file}: missing columns {missing}")
    name = str(metrics.get("model") or folder.name)
    per_subject = per_subject.assign(model=name, subject=per_subject["subject"].astype(str))
    hist_file = folder / "history.csv"
    history = _read_csv(hist_file) if hist_file.is_file() else pd.DataFrame()
    return ModelResult(name, folder, metrics, per_subject, history)


def collect_results(
    models_dir: Path, spec_hash: str, dataset_version: str | None, task: dict | None = None
) -> tuple[list[ModelResult], list[Excluded]]:
    """Model results under ``models_dir`` split into (ranked, excluded), folders sorted by name:
    :func:`crfm_bench.report.leaderboard.select_model_dirs` (same metric contract, dataset
    version and setting). No model folder -> InputError naming the folder.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir() or not any(
        p.is_dir() and not p.name.startswith(".") for p in models_dir.iterdir()
    ):
        raise InputError(
            f"{models_dir}: no model results found; run `crfm-bench run` first "
            "(it writes one folder per model there)"
        )
    ranked, excluded = leaderboard.select_model_dirs(models_dir, spec_hash, dataset_version, task)
    return (
        [load_model_result(folder) for folder, _ in ranked],
        [Excluded(name, reason) for name, reason in excluded],
    )


def leaderboard_table(results: list[ModelResult]) -> pd.DataFrame:
    """One row per model from its ``metrics.json``, ranked by mean PSNR (best first); the
    columns of :func:`crfm_bench.report.leaderboard.collect`."""
    return leaderboard.rank(
        [
            leaderboard.row_from_metrics(
                r.name, r.metrics, r.metrics.get("run_key"), r.metrics.get("run_id")
            )
            for r in results
        ]
    )


LEADERBOARD_HEADER = leaderboard.HEADER
leaderboard_rows = leaderboard.cells


SIGNIFICANCE_HEADER = [
    "metric",
    "best",
    "vs model",
    "n",
    "best mean",
    "model mean",
    "difference (best - model)",
    "95 % bootstrap CI",
    "Wilcoxon W",
    "p (two-sided)",
    "p (Holm)",
    "significant",
    "smallest possible p",
    "note",
]


def significance_rows(table: pd.DataFrame) -> list[list[str]]:
    """Cells of the significance table."""
    rows = []
    for _, r in table.iterrows():
        digits = 2 if r["metric"].startswith("psnr") else 4
        ci = (
            "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"
        )
        rows.append(
            [
                str(r["metric"]),
                str(r["best"]),
                str(r["model"]),
                str(r["n"]),
                fmt_num(r["best_mean"], f".{digits}f"),
                fmt_num(r["model_mean"], f".{digits}f"),
                fmt_num(r["mean_diff"], f"+.{digits}f"),
                ci,
                fmt_num(r["statistic"], ".1f"),
                fmt_num(r["p_value"], ".3g"),
                fmt_num(r["p_holm"], ".3g"),
                "yes" if bool(r["significant"]) else "no",
                fmt_num(r["p_floor"], ".3g"),
                str(r["note"]),
            ]
        )
    return rows


MODELS_HEADER = [
    "model",
    "size",
    "parameters",
    "parameters at size paper",
    "global residual",
    "loss",
    "reads the reference",
]


def model_rows(params: Params, results: list[ModelResult]) -> list[list[str]]:
    """Per ranked model: size, parameters as run (``metrics.json``), parameters of the
    published configuration, global residual, loss and whether it reads the reference.

    Size, residual and loss are the model as ``params`` configures it (the run key ties a
    result to that configuration); a ``residual``/``loss`` recorded in ``metrics.json`` wins.
    """
    from crfm_bench.engine.build import model_options
    from crfm_bench.models.registry import model_card

    rows = []
    for r in results:
        mcfg = params.model_config_for(r.name)
        try:
            options = model_options(params, r.name)
            card = model_card(r.name, 3, params.task.scale, mcfg.size, options)
        except (InputError, KeyError):
            card = {}
        n = r.metrics.get("params", card.get("params"))
        rows.append(
            [
                r.name,
                mcfg.size,
                fmt_num(n, ",.0f") if n is not None else "?",
                fmt_num(card.get("params_paper"), ",.0f") if card else "?",
                str(r.metrics.get("residual", card.get("residual", "?"))),
                str(r.metrics.get("loss", card.get("loss", "?"))),
                "yes" if card.get("reads_reference") else ("no" if card else "?"),
            ]
        )
    return rows


# --- Rendering ------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(page: Page) -> str:
    """Markdown text of ``page`` (figures linked by their relative path)."""
    out: list[str] = []
    for block in page.blocks:
        kind = block[0]
        if kind == "h1":
            out += [f"# {block[1]}", ""]
        elif kind == "h2":
            out += [f"## {block[1]}", ""]
        elif kind == "p":
            out += [block[1], ""]
        elif kind == "pre":
            out += ["```", block[1], "```", ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{block[2]}]({block[1]})", "", f"*{block[2]}*", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #eee;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.3em .55em;text-align:right}
th{background:#f3f3f3}
td:nth-child(2),td:last-child,th:nth-child(2){text-align:left}
tr:nth-child(even) td{background:#fafafa}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.82em}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}
""".strip()


def render_html(page: Page, root: Path) -> str:
    """One self-contained HTML document; images under ``root`` are embedded as data URIs."""
    esc = html.escape
    title = next((b[1] for b in page.blocks if b[0] == "h1"), "crfm-bench report")
    body: list[str] = []
    for block in page.blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{esc(block[1])}</p>")
        elif kind == "pre":
            body.append(f"<pre>{esc(block[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((root / block[1]).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block[2])}">'
                f"<figcaption>{esc(block[2])}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --- Figures ----------------------------------------------------------------------------------


def _slice_figures(
    params: Params, ranked: list[ModelResult], out: Path
) -> tuple[dict, dict[str, str]]:
    """``slices_<model>.png`` for each ranked model: one subject, one colour scale, one box.

    The subject is the first test subject (sorted) that has a saved prediction; slice
    indices, detail boxes and the grey scale come from its HR volume alone. Returns the
    shared settings and, per model, the figure's file name or why there is none.
    """
    from crfm_bench.data.volume import load_volume
    from crfm_bench.engine.data import load_cases

    scale = params.task.factors
    cases = load_cases(params, ("test",), need_reference=False)

    def prediction(r: ModelResult, subject: str) -> Path:
        return r.folder / "predictions" / f"{subject}_sr.nii.gz"

    case = next((c for c in cases if any(prediction(r, c.subject).is_file() for r in ranked)), None)
    if case is None:
        return {}, {r.name: "no saved predictions (eval.save_predictions)" for r in ranked}
    hr = (case.hr * case.divisor).astype(np.float32)
    lr_on_hr = figures.upsample_nearest(case.lr * case.divisor, scale)
    index = figures.slice_indices(hr)
    vmax = figures.display_vmax(hr)
    err_vmax = vmax * figures.ERROR_FRACTION
    boxes = {v: figures.detail_box(figures.view_slice(hr, v, index)) for v in figures.VIEWS}
    made: dict[str, str] = {}
    for r in ranked:
        pred = prediction(r, case.subject)
        if not pred.is_file():
            made[r.name] = f"no saved prediction for {case.subject}"
            continue
        sr = load_volume(pred).data
        if sr.shape != hr.shape:
            raise InputError(f"{pred}: shape {sr.shape} is not the HR shape {hr.shape}")
        row = r.per_subject.loc[r.per_subject["subject"] == case.subject]
        psnr = f"  PSNR {row['psnr'].iloc[0]:.2f} dB" if len(row) else ""
        name = f"slices_{r.name}.png"
        figures.comparison_panel(
            out / name,
            lr_on_hr,
            sr,
            hr,
            index=index,
            vmax=vmax,
            err_vmax=err_vmax,
            boxes=boxes,
            title=f"{r.name}  {case.subject}{psnr}",
        )
        made[r.name] = name
    shared = {
        "subject": case.subject,
        "index": list(index),
        "vmax": vmax,
        "err_vmax": err_vmax,
        "boxes": {v: list(b) for v, b in boxes.items()},
        "figures": made,
    }
    return shared, made


# --- The report -------------------------------------------------------------------------------


def _setting_title(params: Params) -> str:
    return params.task.title()


def build_report(params: Params, n_resamples: int = 10_000, seed: int = 0) -> Path:
    """Write ``reports/index.{md,html}``, ``reports/figures/`` and ``reports/significance.csv``.

    Reads every model folder under ``<runs_dir>/models/`` (sorted by name; not
    ``benchmark.models``, so the report shows what was actually run). ``n_resamples`` and
    ``seed`` drive the bootstrap intervals. Returns the path of ``index.html``. Raises
    InputError if there is no model folder or no model under the current metric contract.
    """
    from crfm_bench.data.manifest import manifest_version
    from crfm_bench.metrics import metric_spec, metric_spec_hash

    runs_models = Path(params.paths.runs_dir) / "models"
    reports = ensure_writable_dir(Path(params.paths.reports_dir), "paths.reports_dir")
    spec = metric_spec(params.eval.slice_axis)
    spec_hash = metric_spec_hash(spec)
    manifest = Path(params.paths.data_dir) / "hr" / "manifest.csv"
    version = manifest_version(manifest) if manifest.is_file() else None
    ranked, excluded = collect_results(
        runs_models, spec_hash, version, params.task.model_dump(mode="json")
    )
    if not ranked:
        why = "; ".join(f"{e.name}: {e.reason}" for e in excluded)
        raise InputError(f"{runs_models}: no model to rank ({why})")

    board = leaderboard_table(ranked)
    order = board["model"].tolist()
    per_subject = pd.concat([r.per_subject for r in ranked], ignore_index=True)
    sig = stats.compare_to_best(
        per_subject, ("psnr", "ssim"), best=order[0], n_resamples=n_resamples, seed=seed
    )
    by_name = {r.name: r for r in ranked}
    ranked_sorted = [by_name[m] for m in order]

    with atomic_dir(reports / "figures") as fig_dir:
        figures.box_plots(fig_dir / "metrics_box.png", per_subject, order)
        figures.metric_bars(fig_dir / "metrics_bar.png", board)
        curves = figures.training_curves(
            fig_dir / "training_curves.png", {r.name: r.history for r in ranked_sorted}
        )
        shared, slices = _slice_figures(params, ranked_sorted, fig_dir)
        (fig_dir / "slices.json").write_text(json.dumps(shared, indent=2) + "\n")
    atomic_write_text(reports / "significance.csv", sig.to_csv(index=False))

    n_subjects = int(per_subject.groupby("model")["subject"].nunique().max())
    page = Page()
    page.add("h1", f"crfm-bench report: {_setting_title(params)}")
    page.add("h2", "Setting")
    t = params.task
    page.add(
        "table",
        ["target", "reference", "degradation domain", "scale", "dataset version", "test subjects"],
        [
            [
                t.target,
                t.reference or "none",
                t.domain,
                f"×{t.scale}",
                version or "unknown (no HR manifest)",
                str(n_subjects),
            ]
        ],
    )
    page.add(
        "p",
        f"The {t.target} volume is degraded in the {t.domain} domain by a factor {t.scale} and "
        f"super-resolved back to the HR grid"
        + (
            f"; reference-guided models also see the HR {t.reference} volume of the same subject."
            if t.reference
            else "."
        )
        + " All numbers are on the test split.",
    )
    page.add(
        "p",
        f"Every learned model gets the same global residual (benchmark.residual = "
        f"{params.benchmark.residual}, unless a model overrides it) and sizes `tiny`/`base` "
        "are capacity-matched to crfm (within ±10 % parameters); `paper` is the published "
        "configuration. Training-free models are evaluated on the whole LR volume in one pass, "
        "learned ones by a sliding window.",
    )
    page.add("table", MODELS_HEADER, model_rows(params, ranked_sorted))

    page.add("h2", "Metric contract")
    page.add(
        "p",
        f"Metric spec hash {spec_hash}. PSNR and SSIM are computed per volume in 3D on the HR "
        "grid after dividing both volumes by the HR foreground 99.5th percentile and clipping "
        "to [0, 1] (data range 1); the table reports mean ± std over test subjects. Only "
        "results recorded under this hash are ranked.",
    )
    page.add("pre", json.dumps(spec, indent=2, sort_keys=True))

    page.add("h2", "Leaderboard")
    page.add("p", "Ranked by mean PSNR. ± is the standard deviation over test subjects.")
    page.add("table", LEADERBOARD_HEADER, leaderboard_rows(board))
    if excluded:
        page.add("p", "Not ranked:")
        page.add("table", ["model", "reason"], [[e.name, e.reason] for e in excluded])

    page.add("h2", "Significance")
    floor = 2.0 ** (1 - n_subjects) if n_subjects >= 1 else float("nan")
    caveat = (
        f" With n = {n_subjects} test subjects the smallest two-sided Wilcoxon p-value any "
        f"comparison can reach is {floor:.3g}, so no difference can be significant at "
        f"{stats.ALPHA}: read the table as descriptive."
        if floor >= stats.ALPHA
        else ""
    )
    page.add(
        "p",
        f"Best model {order[0]} against each other model, paired over test subjects: "
        "two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon; zero differences dropped) "
        "and a percentile bootstrap 95 % interval of the mean difference "
        f"({n_resamples} resamples of subjects, seed {seed}). p (Holm) corrects the p-values "
        "of each metric for the number of models compared (Holm 1979, family-wise error "
        f"{stats.ALPHA}); 'significant' means p (Holm) < {stats.ALPHA}. n is the number of "
        "paired test subjects. The smallest possible p is the "
        "p-value these subjects would give if every difference had the same sign." + caveat,
    )
    if sig.empty:
        page.add("p", "Only one model is ranked: nothing to compare.")
    else:
        page.add("table", SIGNIFICANCE_HEADER, significance_rows(sig))

    page.add("h2", "Per-subject results")
    page.add("img", "figures/metrics_box.png", "PSNR and SSIM per test subject (dots) per model.")
    page.add("img", "figures/metrics_bar.png", "Mean PSNR and SSIM per model; error bars: ± 1 std.")

    page.add("h2", "Training curves")
    if curves is None:
        page.add("p", "No ranked model was trained (no training history).")
    else:
        page.add(
            "img",
            "figures/training_curves.png",
            "Validation PSNR and training loss per epoch of every trained model.",
        )

    page.add("h2", "Example slices")
    if shared:
        x, y, z = shared["index"]
        page.add(
            "p",
            f"Subject {shared['subject']}, slices x={x}, y={y}, z={z} for every model. Columns: "
            "LR (nearest-neighbour on the HR grid), SR, HR, |SR - HR|, and the yellow detail box "
            f"of SR and HR enlarged. One grey scale for all figures: 0 to {shared['vmax']:.4g} "
            "(99.5th percentile of the HR brain); error scale 0 to "
            f"{shared['err_vmax']:.4g}.",
        )
    for r in ranked_sorted:
        made = slices.get(r.name, "")
        if made.endswith(".png"):
            page.add("img", f"figures/{made}", f"{r.name}: LR | SR | HR | |SR - HR| | details")
        else:
            page.add("p", f"{r.name}: no figure ({made or 'no saved prediction'}).")

    atomic_write_text(reports / "index.md", render_markdown(page))
    return atomic_write_text(reports / "index.html", render_html(page, reports))
