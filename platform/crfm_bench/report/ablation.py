r"""The ablation page: what each part of ``crfm`` contributes, at equal capacity.

``crfm-bench run --models crfm,crfm-noref,... --seeds 3`` leaves, per model, one folder
``<runs_dir>/models/<name>/`` with ``seed-<k>/per_subject.csv`` for every training seed.
:func:`ablation_report` pairs the reference model (``crfm``) with each ablation *by subject
and seed*, and writes ``reports/ablation.{md,html,json}``.

**The effect of a part** is measured as the difference the ablation makes, per metric
(PSNR in dB, SSIM unitless; higher is better for both):

.. math::

    d_{i,s} = m_{\text{crfm}}(i, s) - m_{\text{ablation}}(i, s), \qquad
    \bar d_i = \frac{1}{S} \sum_{s=1}^{S} d_{i,s}, \qquad
    \hat\Delta = \frac{1}{n} \sum_{i=1}^{n} \bar d_i

for test subject :math:`i` (``n`` of them) and training seed :math:`s` (``S`` of them; seed
``s`` of crfm is paired with seed ``s`` of the ablation, both trained on the same patches).

**Interval.** Subjects are the independent unit: every seed is evaluated on the same test
subjects, so the ``n * S`` differences are not independent (a subject that is hard for one
seed is hard for all). The seeds are therefore averaged within a subject first, and the
95 % interval is Student's t interval over the ``n`` subject means,
:math:`\hat\Delta \pm t_{0.975,\,n-1}\, s_{\bar d} / \sqrt n`. A t interval rather than the
percentile bootstrap of :mod:`crfm_bench.report.stats`: with ten subjects the percentile
bootstrap is too narrow (its spread is the plug-in :math:`\sqrt{(n-1)/n}` of the standard
error and it ignores the t quantile), so it would call parts helpful too easily; the mean
of ``S`` seeds per subject is close enough to normal for the t interval. The two-sided
one-sample t test of the same :math:`\bar d_i` gives a p-value, Holm-corrected across the
parts (per metric) for reading several parts at once.

**What the interval does not hold.** It treats the ``S`` trained networks as fixed: a seed
that is better on *every* subject moves all :math:`\bar d_i` together, which the spread over
subjects does not see. The page therefore also lists the mean difference of each seed
separately; when they disagree in sign the verdict should be read with that in mind.

**Verdict** per part and metric, from the interval: above zero "helps" (removing the part
lowers the metric), below zero "hurts", containing zero "no evidence".
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crfm_bench.atomic import atomic_write_text, ensure_writable_dir
from crfm_bench.config import Params
from crfm_bench.errors import InputError, MissingInputError
from crfm_bench.report.build import Page, render_html, render_markdown
from crfm_bench.report.leaderboard import fmt_num, read_metrics_json
from crfm_bench.report.stats import holm_adjust

#: The ablations of ``crfm`` and the part each one removes (models/crfm.py VARIANTS).
PARTS: dict[str, str] = {
    "crfm-noref": "reference (R and G; FMP keeps its cross-scale half)",
    "crfm-nograd": "reference gradient branch G",
    "crfm-nofmp": "FMP (both attentions and the mutual projection)",
    "crfm-fmp-xscale": "cross-modality half of FMP",
    "crfm-fmp-xmod": "cross-scale half of FMP",
}
METRICS = ("psnr", "ssim")
CONFIDENCE = 0.95
HELPS, HURTS, NO_EVIDENCE = "helps", "hurts", "no evidence"


@dataclass(frozen=True)
class Effect:
    """The paired effect of one part on one metric (reference minus ablation).

    ``mean``: over subjects of the per-subject mean over seeds; ``ci_low``/``ci_high``: the
    t interval (NaN for fewer than two subjects); ``sd``: std (ddof 1) of the subject means;
    ``p_value``: two-sided one-sample t test of the subject means against 0; ``per_seed``:
    the mean difference of each seed alone (seed order).
    """

    metric: str
    mean: float
    ci_low: float
    ci_high: float
    sd: float
    n_subjects: int
    n_seeds: int
    p_value: float
    per_seed: list[float]
    verdict: str


def verdict(low: float, high: float) -> str:
    """ "helps" when the interval lies above 0, "hurts" below 0, else "no evidence"."""
    if np.isfinite(low) and low > 0:
        return HELPS
    if np.isfinite(high) and high < 0:
        return HURTS
    return NO_EVIDENCE


def paired_effect(
    reference: pd.DataFrame,
    ablation: pd.DataFrame,
    metric: str,
    confidence: float = CONFIDENCE,
    what: str = "ablation",
) -> Effect:
    """Effect on ``metric`` of what ``ablation`` removes, paired by subject and seed.

    Both tables have one row per (``seed``, ``subject``) with a column ``metric``; they must
    hold the same (seed, subject) pairs (else InputError naming ``what``). See the module
    doc for the estimator and the interval.
    """
    from scipy import stats as sps

    if not 0 < confidence < 1:
        raise InputError(f"confidence: {confidence} must be between 0 and 1")
    keys = ["seed", "subject"]
    for name, table in (("reference", reference), (what, ablation)):
        missing = {*keys, metric} - set(table.columns)
        if missing:
            raise InputError(f"{name}: per-subject table lacks {', '.join(sorted(missing))}")
        if table.duplicated(keys).any():
            raise InputError(f"{name}: a (seed, subject) pair appears twice")
    a = reference.set_index(keys)[metric].astype(float)
    b = ablation.set_index(keys)[metric].astype(float)
    if set(a.index) != set(b.index):
        only_ref = sorted(set(a.index) - set(b.index))
        only_abl = sorted(set(b.index) - set(a.index))
        first = (only_ref or only_abl)[0]
        raise InputError(
            f"{what}: (seed, subject) pairs differ from the reference's "
            f"({len(only_ref)} only in the reference, {len(only_abl)} only in {what}; e.g. "
            f"seed {first[0]}, subject {first[1]}): not the same test split or seeds"
        )
    d = (a - b.loc[a.index]).rename("d").reset_index()
    if not np.isfinite(d["d"]).all():
        raise InputError(f"{what}: {metric} differences are NaN or infinite")
    seeds = sorted(d["seed"].unique())
    by_subject = d.groupby("subject")["d"].mean().to_numpy()
    n = int(by_subject.size)
    mean = float(by_subject.mean()) if n else float("nan")
    per_seed = [float(d.loc[d["seed"] == s, "d"].mean()) for s in seeds]
    if n < 2:
        return Effect(
            metric, mean, math.nan, math.nan, math.nan, n, len(seeds), math.nan, per_seed,
            NO_EVIDENCE,
        )  # fmt: skip
    sd = float(by_subject.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # identical differences up to rounding
        sd = 0.0
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    if sd == 0.0:
        p = math.nan if mean == 0.0 else 0.0
    else:
        p = float(sps.ttest_1samp(by_subject, 0.0).pvalue)
    low, high = mean - half, mean + half
    return Effect(
        metric, mean, low, high, sd, n, len(seeds), p, per_seed, verdict(low, high)
    )  # fmt: skip


# --- Reading the run outputs -----------------------------------------------------------------


@dataclass
class ModelSeeds:
    """One model's results: per-(seed, subject) metrics and its ``metrics.json``."""

    name: str
    folder: Path
    metrics: dict
    table: pd.DataFrame = field(repr=False)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MissingInputError(f"{path}: not found (written by crfm-bench run)")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = {"subject", *METRICS} - set(table.columns)
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(sorted(missing))}")
    if table.empty:
        raise InputError(f"{path}: no subject")
    return table.assign(subject=table["subject"].astype(str))


def _setting(task) -> str:
    if not isinstance(task, dict):
        return str(task)
    t = {k: task.get(k) for k in ("target", "reference", "domain", "scale")}
    return f"{t['target']} <- {t['reference'] or 'no reference'}, {t['domain']} x{t['scale']}"


def expected_seeds(params: Params) -> list[int]:
    """The training seeds ``crfm-bench run`` uses: ``train.seed`` + 0 .. ``train.seeds`` - 1."""
    return [params.train.seed + k for k in range(params.train.seeds)]


def read_model_seeds(
    folder: Path,
    seeds: list[int],
    spec_hash: str,
    task: dict,
    dataset_version: str | None = None,
) -> ModelSeeds:
    """Read ``folder`` (``<runs_dir>/models/<name>``): every seed's ``per_subject.csv``.

    With several ``seeds`` the folder must be the aggregate of a run with exactly these
    seeds (``metrics.json`` ``seed_list``) and hold ``seed-<k>/`` for each; with one seed,
    the folder's own ``per_subject.csv`` (its ``metrics.json`` ``seed`` must match). The
    result must be of the current metric contract, setting (``task``) and, when given, dataset
    version. Anything else is one InputError/MissingInputError naming the file.
    """
    folder = Path(folder)
    mfile = folder / "metrics.json"
    if not mfile.is_file():
        raise MissingInputError(
            f"{folder}: no finished result (no metrics.json); run crfm-bench run --models "
            f"{folder.name} --seeds {len(seeds)}"
        )
    metrics = read_metrics_json(mfile)
    if metrics.get("metric_spec_hash") != spec_hash:
        raise InputError(
            f"{mfile}: metric contract {metrics.get('metric_spec_hash')} is not the current "
            f"{spec_hash} (eval.slice_axis or the metric code differ)"
        )
    if metrics.get("task") != task:
        raise InputError(
            f"{mfile}: setting {_setting(metrics.get('task'))} is not the current "
            f"{_setting(task)} (task.*)"
        )
    if dataset_version is not None and metrics.get("dataset_version") != dataset_version:
        raise InputError(
            f"{mfile}: dataset version {metrics.get('dataset_version')} is not the current "
            f"{dataset_version}"
        )
    got = metrics.get("seed_list", [metrics.get("seed")])
    if list(got) != list(seeds):
        hint = f"; pass --seeds {len(got)}" if len(got) != len(seeds) else ""
        raise InputError(
            f"{mfile}: trained with seeds {got}, expected {seeds} (train.seed, train.seeds{hint})"
        )
    parts = []
    if len(seeds) == 1:
        parts.append(_read_csv(folder / "per_subject.csv").assign(seed=seeds[0]))
    else:
        for k, seed in enumerate(seeds, start=1):
            sub = folder / f"seed-{k}"
            if not (sub / "metrics.json").is_file():
                raise MissingInputError(f"{sub / 'metrics.json'}: not found (seed {seed})")
            got_seed = read_metrics_json(sub / "metrics.json").get("seed")
            if got_seed != seed:
                raise InputError(f"{sub / 'metrics.json'}: seed {got_seed}, expected {seed}")
            parts.append(_read_csv(sub / "per_subject.csv").assign(seed=seed))
    table = pd.concat(parts, ignore_index=True)[["seed", "subject", *METRICS]]
    name = str(metrics.get("model") or folder.name)
    return ModelSeeds(name, folder, metrics, table)


# --- The page ----------------------------------------------------------------------------------


@dataclass
class PartResult:
    """One row of the page: the part an ablation removes and its effect per metric."""

    part: str
    model: str
    effects: dict[str, Effect]
    p_holm: dict[str, float]

    def seeds_disagree(self) -> bool:
        """Whether the per-seed mean differences of some metric differ in sign."""
        return any(
            min(e.per_seed) < 0 < max(e.per_seed) for e in self.effects.values() if e.per_seed
        )

    def summary(self) -> str:
        v = {m: e.verdict for m, e in self.effects.items()}
        if len(set(v.values())) == 1:
            text = next(iter(v.values()))
        else:
            text = "mixed (" + ", ".join(f"{m.upper()}: {x}" for m, x in v.items()) + ")"
        return text + ("; seeds disagree in sign" if self.seeds_disagree() else "")


def ablation_effects(
    reference: ModelSeeds, ablations: list[ModelSeeds], confidence: float = CONFIDENCE
) -> list[PartResult]:
    """The effect of every ablation against ``reference``, with Holm-adjusted p per metric."""
    rows = [
        PartResult(
            PARTS.get(a.name, f"what {a.name} removes"),
            a.name,
            {
                m: paired_effect(reference.table, a.table, m, confidence, what=str(a.folder))
                for m in METRICS
            },
            {},
        )
        for a in ablations
    ]
    for m in METRICS:
        adjusted = holm_adjust([r.effects[m].p_value for r in rows])
        for r, p in zip(rows, adjusted, strict=True):
            r.p_holm[m] = float(p)
    return rows


def _interval(e: Effect, digits: int) -> str:
    if not np.isfinite(e.ci_low):
        return f"{e.mean:+.{digits}f} (no interval: n = {e.n_subjects})"
    return f"{e.mean:+.{digits}f} [{e.ci_low:+.{digits}f}, {e.ci_high:+.{digits}f}]"


PARTS_HEADER = [
    "part removed",
    "ablation",
    "ΔPSNR dB [95 % CI]",
    "PSNR",
    "ΔSSIM [95 % CI]",
    "SSIM",
    "p (Holm) PSNR / SSIM",
    "ΔPSNR per seed",
    "verdict",
]


def part_rows(rows: list[PartResult]) -> list[list[str]]:
    """Cells under :data:`PARTS_HEADER`."""
    out = []
    for r in rows:
        ps, ss = r.effects["psnr"], r.effects["ssim"]
        out.append(
            [
                r.part,
                r.model,
                _interval(ps, 2),
                ps.verdict,
                _interval(ss, 4),
                ss.verdict,
                f"{fmt_num(r.p_holm['psnr'], '.3g') or '-'} / "
                f"{fmt_num(r.p_holm['ssim'], '.3g') or '-'}",
                ", ".join(f"{x:+.2f}" for x in ps.per_seed),
                r.summary(),
            ]
        )
    return out


MODELS_HEADER = ["model", "parameters", "vs reference", "PSNR dB (± over seeds)", "SSIM"]


def model_rows(reference: ModelSeeds, ablations: list[ModelSeeds]) -> list[list[str]]:
    """Per model: parameters (from ``metrics.json``), their ratio to the reference, and mean
    PSNR/SSIM (mean over seeds of the per-seed test means, ± their std over seeds)."""
    base = reference.metrics.get("params")
    out = []
    for m in (reference, *ablations):
        n = m.metrics.get("params")
        ratio = (
            f"{100 * (n / base - 1):+.1f} %"
            if n is not None and base and m is not reference
            else ("reference" if m is reference else "")
        )
        cells = []
        for metric, digits in (("psnr", 2), ("ssim", 4)):
            v, s = m.metrics.get(f"test_{metric}_mean"), m.metrics.get(f"test_{metric}_std")
            text = fmt_num(v, f".{digits}f")
            if text and s is not None and len(m.table["seed"].unique()) > 1:
                text += f" ± {s:.{digits}f}"
            cells.append(text)
        out.append([m.name, fmt_num(n, ",.0f") or "?", ratio, *cells])
    return out


def method_text(n: int, seeds: int, confidence: float = CONFIDENCE) -> str:
    return (
        f"Δ = reference minus ablation, paired by test subject and training seed (seed k of "
        f"both models was trained on the same patches). The {seeds} seed(s) are averaged "
        f"within each subject first: subjects are the independent unit (every seed is "
        f"evaluated on the same {n} subjects, so their n × seeds differences are not "
        f"independent). The {100 * confidence:.0f} % interval is Student's t interval over "
        f"the {n} subject means (mean ± t(n-1) · sd / √n); a percentile bootstrap would be "
        "too narrow with this few subjects. Verdict per metric: interval above 0 'helps' (the "
        "part raises the metric), below 0 'hurts', containing 0 'no evidence'. p (Holm) is "
        "the two-sided one-sample t test of the same subject means, Holm-corrected across the "
        "parts for each metric. The interval holds the trained networks fixed: a seed that is "
        "better on every subject is not in the spread over subjects, so the mean Δ of each seed "
        "is listed too; read a verdict whose seeds disagree in sign with care."
    )


def ablation_report(
    params: Params,
    reference: str = "crfm",
    ablations: list[str] | None = None,
    confidence: float = CONFIDENCE,
) -> Path:
    """Write ``<reports_dir>/ablation.{md,html,json}`` for the current setting; return the
    HTML path.

    Reads ``<runs_dir>/models/<name>/`` of ``reference`` and each of ``ablations`` (default:
    every ablation of :data:`PARTS`) with the seeds of ``train.seed``/``train.seeds``.
    Everything is read and checked before anything is written.
    """
    from crfm_bench.data.manifest import manifest_version
    from crfm_bench.metrics import metric_spec, metric_spec_hash

    names = list(dict.fromkeys(ablations or PARTS))
    if reference in names:
        raise InputError(f"--ablations: {reference} is the reference, not an ablation")
    if not names:
        raise InputError("--ablations: no ablation given")
    models_dir = Path(params.paths.runs_dir) / "models"
    spec_hash = metric_spec_hash(metric_spec(params.eval.slice_axis))
    task = params.task.model_dump(mode="json")
    manifest = Path(params.paths.data_dir) / "hr" / "manifest.csv"
    version = manifest_version(manifest) if manifest.is_file() else None
    seeds = expected_seeds(params)

    def read(name: str) -> ModelSeeds:
        return read_model_seeds(models_dir / name, seeds, spec_hash, task, version)

    ref = read(reference)
    abl = [read(n) for n in names]
    rows = ablation_effects(ref, abl, confidence)
    reports = ensure_writable_dir(Path(params.paths.reports_dir), "paths.reports_dir")

    n = rows[0].effects["psnr"].n_subjects
    page = Page()
    page.add("h1", f"Ablation study: {params.task.title()}")
    page.add(
        "p",
        f"Reference model {reference}; {len(names)} ablation(s), each removing one part and "
        f"refilling its parameters with plain residual blocks (capacity-matched). {n} test "
        f"subjects, {len(seeds)} training seed(s) per model ({', '.join(map(str, seeds))}), "
        f"dataset version {version or ref.metrics.get('dataset_version', 'unknown')}, metric "
        f"contract {spec_hash}. Positive Δ: the full model is better, so the part helps.",
    )
    page.add("h2", "Effect of each part")
    page.add("table", PARTS_HEADER, part_rows(rows))
    page.add("p", method_text(n, len(seeds), confidence))
    page.add("h2", "Models and capacity")
    page.add(
        "p",
        "Parameters as trained (metrics.json); 'vs reference' is the difference in parameter "
        "count, so an effect above is one of function, not of capacity.",
    )
    page.add("table", MODELS_HEADER, model_rows(ref, abl))

    doc = {
        "setting": task,
        "title": params.task.title(),
        "reference": reference,
        "seeds": seeds,
        "n_subjects": n,
        "dataset_version": version or ref.metrics.get("dataset_version"),
        "metric_spec_hash": spec_hash,
        "confidence": confidence,
        "method": method_text(n, len(seeds), confidence),
        "parts": [
            {
                "part": r.part,
                "model": r.model,
                "verdict": r.summary(),
                **{m: {**asdict(e), "p_holm": r.p_holm[m]} for m, e in r.effects.items()},
            }
            for r in rows
        ],
        "params": {m.name: m.metrics.get("params") for m in (ref, *abl)},
    }
    text = json.dumps(_finite(doc), indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(reports / "ablation.json", text)
    atomic_write_text(reports / "ablation.md", render_markdown(page))
    return atomic_write_text(reports / "ablation.html", render_html(page, reports))


def _finite(value):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
