"""The typed schema of ``params.yaml``: one place that validates every knob.

``load_params(path, overrides)`` reads the YAML file, applies ``-S key.path=value``
overrides (the spelling of ``dvc exp run -S``; values are parsed as YAML), and validates
the result. Unknown keys and bad values raise :class:`InputError` naming the file and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crfm_bench.errors import InputError, MissingInputError
from crfm_bench.scale import format_scale, parse_scale

SYNTH_CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
# T1ce (post-contrast T1) exists in BraTS; the synthetic dataset cannot make it.
CONTRASTS = (*SYNTH_CONTRASTS, "T1ce")
Contrast = Literal["T1w", "T2w", "PDw", "FLAIR", "T1ce"]
SynthContrast = Literal["T1w", "T2w", "PDw", "FLAIR"]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsConfig(_Section):
    """Where outputs go, relative to the working directory (the project root)."""

    data_dir: Path = Path("data")
    runs_dir: Path = Path("runs")
    reports_dir: Path = Path("reports")


class LesionConfig(_Section):
    """Optional synthetic lesions: blobs with lengthened T1 and T2 (e.g. oedema-like)."""

    enabled: bool = False
    max_count: Annotated[int, Field(ge=1)] = 3
    radius_mm: tuple[PositiveFloat, PositiveFloat] = (4.0, 10.0)
    t1_factor: Annotated[float, Field(ge=1)] = 1.6
    t2_factor: Annotated[float, Field(ge=1)] = 2.0


class SynthConfig(_Section):
    """The embedded dataset: subjects synthesised from the ICBM 2009a tissue maps (DATA.md)."""

    n_subjects: Annotated[int, Field(ge=3)] = 16  # params.yaml: 23 (10 train, 3 val, 10 test)
    n_val: Annotated[int, Field(ge=1)] = 3
    n_test: Annotated[int, Field(ge=1)] = 3
    contrasts: list[SynthContrast] = Field(default_factory=lambda: list(SYNTH_CONTRASTS))
    field_strength: Literal[1.5, 3.0] = 1.5
    spacing_mm: Annotated[float, Field(gt=0, le=8)] = 2.0
    crop_to_brain: bool = True
    crop_margin_mm: Annotated[float, Field(ge=0)] = 4.0
    shape_multiple: Annotated[int, Field(ge=1, le=16)] = 4
    snr: Annotated[float, Field(gt=0)] | None = 40.0
    deform_mm: Annotated[float, Field(ge=0)] = 3.0
    deform_smoothness_mm: PositiveFloat = 24.0
    bias_strength: Annotated[float, Field(ge=0, lt=1)] = 0.15
    param_jitter: Annotated[float, Field(ge=0, lt=0.5)] = 0.05
    lesions: LesionConfig = Field(default_factory=LesionConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _split_fits(self) -> SynthConfig:
        if self.n_val + self.n_test >= self.n_subjects:
            raise ValueError(
                f"n_val + n_test ({self.n_val + self.n_test}) must leave training subjects "
                f"out of n_subjects ({self.n_subjects})"
            )
        if len(set(self.contrasts)) != len(self.contrasts) or not self.contrasts:
            raise ValueError("contrasts must be a non-empty list without repeats")
        return self


class IngestConfig(_Section):
    """A real dataset to ingest (``crfm-bench data ingest`` without arguments, DVC pipelines)."""

    kind: Literal["ixi", "brats", "bids"] | None = None
    raw_dir: Path | None = None
    target: Contrast = "T2w"  # the grid every contrast of a subject is brought onto
    contrasts: list[Contrast] | None = None  # required per subject; null: every contrast seen
    val_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    shape_multiple: Annotated[int, Field(ge=1, le=16)] = 4  # zero-pad grids so scales divide


class KSpaceConfig(_Section):
    """k-space degradation: keep the centre 1/s of k-space per degraded axis."""

    window: Literal["none", "hann", "tukey"] = "none"
    tukey_alpha: Annotated[float, Field(gt=0, le=1)] = 0.3
    snr: Annotated[float, Field(gt=0)] | None = None
    save_zero_filled: bool = False


class ImageConfig(_Section):
    """Image-domain degradation: anti-aliasing blur then decimation."""

    blur: Literal["gaussian", "slice_profile"] = "gaussian"
    fwhm_factor: PositiveFloat = 1.0  # Gaussian FWHM = fwhm_factor * s voxels per degraded axis


class DegradeConfig(_Section):
    """Which LR versions to make from the HR dataset; one output folder per (domain, scale)."""

    domains: list[Literal["kspace", "image"]] = Field(default_factory=lambda: ["kspace"])
    scales: list[str] = Field(default_factory=lambda: ["2"])
    contrasts: list[Contrast] | None = None  # None: every contrast in the manifest
    kspace: KSpaceConfig = Field(default_factory=KSpaceConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    workers: Annotated[int, Field(ge=0)] = 0  # 0: in-process; >0: that many Ray tasks at once
    seed: int = 0

    @field_validator("scales", mode="before")
    @classmethod
    def _canonical_scales(cls, value: Any) -> list[str]:
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("must be a non-empty list such as [2, 4, 1x1x4]")
        out = []
        for v in value:
            try:
                out.append(format_scale(parse_scale(v)))
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return out


class TaskConfig(_Section):
    """The benchmark setting: which LR target is super-resolved with which HR reference."""

    target: Contrast = "T2w"
    reference: Contrast | None = "PDw"
    domain: Literal["kspace", "image"] = "kspace"
    scale: str = "2"
    # another dataset folder (DIR/hr/manifest.csv) whose test split the trained models are
    # also evaluated on ("trained on X, tested on Y"; crfm_bench.engine.crossdata). Excluded
    # from dumps: it changes neither the training setting nor its run keys.
    test_data: Path | None = Field(default=None, exclude=True)

    @field_validator("scale", mode="before")
    @classmethod
    def _canonical_scale(cls, value: Any) -> str:
        try:
            return format_scale(parse_scale(value))
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @property
    def factors(self) -> tuple[int, int, int]:
        """``scale`` as per-axis integer factors: the one place the library reads it (the
        string is validated and made canonical above; it stays a string for params.yaml,
        the run key and folder names)."""
        return parse_scale(self.scale)

    def title(self) -> str:
        """The setting as people read it: ``T2w ← PDw, kspace ×2`` (the one title function;
        MLflow experiment names are identifiers, see ``tracking.experiment_name``)."""
        return f"{self.target} ← {self.reference or 'no reference'}, {self.domain} ×{self.scale}"

    @model_validator(mode="after")
    def _distinct(self) -> TaskConfig:
        if self.reference == self.target:
            raise ValueError("reference must differ from target")
        return self


#: The default benchmark (issue 9): crfm, a published reference-guided baseline (minet), the
#: reference-free control of equal capacity (crfm-noref), a reference-free baseline (edsr),
#: interpolation, and zero-filling (k-space tasks only: dropped on image-domain tasks).
DEFAULT_MODELS = ("crfm", "minet", "crfm-noref", "edsr", "tricubic", "zerofill")


class BenchmarkConfig(_Section):
    """What ``crfm-bench run`` does by default.

    ``residual``: the global residual of every learned model (``tricubic``: the interpolated
    LR input is added to the network's output; ``none``: the network predicts the whole
    image). One switch for all of them, so no model wins by a skip the others lack;
    ``models.<name>.options.residual`` overrides it for one model.
    """

    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    residual: Literal["tricubic", "none"] = "tricubic"
    experiment: str | None = None  # default: derived from the dataset and task


class ModelConfig(_Section):
    """Per-model settings; unset values fall back to ``train``."""

    # tiny | base: capacity-matched to crfm (+-10 %); paper: the published configuration
    size: Literal["tiny", "base", "paper"] = "tiny"
    lr: PositiveFloat | None = None
    epochs: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the model's constructor


class TrainConfig(_Section):
    """Training on Ray Train (one TorchTrainer per model)."""

    epochs: Annotated[int, Field(ge=1)] = 20
    steps_per_epoch: Annotated[int, Field(ge=1)] = 25
    batch_size: Annotated[int, Field(ge=1)] = 4
    patch_size: Annotated[int, Field(ge=4)] = 32  # HR voxels per axis (cropped to the volume)
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    grad_clip: Annotated[float, Field(ge=0)] = 1.0  # 0: off
    foreground_fraction: Annotated[float, Field(ge=0, le=1)] = 0.9
    val_patches: Annotated[int, Field(ge=1)] = 16
    num_workers: Annotated[int, Field(ge=1)] = 1
    use_gpu: bool = False
    cpus_per_worker: Annotated[int, Field(ge=1)] = 2
    mixed_precision: Literal["auto", "off", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on GPU
    max_failures: Annotated[int, Field(ge=-1)] = 2
    num_to_keep: Annotated[int, Field(ge=1)] = 2
    storage_path: str | None = None  # default <runs_dir>/ray; s3://... or a shared path on clusters
    seed: int = 0
    seeds: Annotated[int, Field(ge=1)] = 1  # training seeds per model: seed, seed+1, ...


class EvalConfig(_Section):
    """Full-volume evaluation on the test split (sliding window on the HR grid)."""

    window: Annotated[int, Field(ge=8)] = 48  # HR voxels per axis
    overlap: Annotated[float, Field(ge=0, lt=1)] = 0.25
    blend: Literal["gaussian", "constant"] = "gaussian"
    batch_size: Annotated[int, Field(ge=1)] = 8  # windows of voxels per model call
    save_predictions: bool = True
    slice_axis: Annotated[int, Field(ge=0, le=2)] = 2


class TrackingConfig(_Section):
    """MLflow. ``uri`` null: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db``."""

    uri: str | None = None
    artifact_location: str | None = None  # default <cwd>/mlruns for a local store
    experiment_prefix: str = "crfm-bench"
    timeout_s: PositiveFloat = 10.0


class RayConfig(_Section):
    """Ray. ``address`` null: ``RAY_ADDRESS`` if set, else a local Ray started by crfm-bench."""

    address: str | None = None
    num_cpus: Annotated[int, Field(ge=1)] | None = None  # local Ray only; null: all cores
    # local Ray only: start the dashboard (on a free port). Train V2 frees the workers of a
    # Tune trial stopped early through its state API, so tune with several workers per
    # trial needs it.
    dashboard: bool = True


class TuneConfig(_Section):
    """Ray Tune with ASHA over ``space``: ``{key: {loguniform|uniform: [lo, hi]} | {choice: [...]}}``.

    Keys are ``lr``, ``lambda_grad`` or any model option (``n_feats``, ``n_blocks``, ...).
    """

    model: str = "crfm"
    num_samples: Annotated[int, Field(ge=1)] = 4
    max_epochs: Annotated[int, Field(ge=1)] = 6
    grace_period: Annotated[int, Field(ge=1)] = 2
    reduction_factor: Annotated[int, Field(ge=2)] = 2
    max_concurrent: Annotated[int, Field(ge=1)] = 1
    space: dict[str, dict[str, list[Any]]] = Field(
        default_factory=lambda: {
            "lr": {"loguniform": [3e-4, 3e-3]},
            "n_feats": {"choice": [16, 24]},
        }
    )

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for key, spec in value.items():
            if len(spec) != 1 or next(iter(spec)) not in ("loguniform", "uniform", "choice"):
                raise ValueError(f"{key}: use one of loguniform, uniform, choice")
            kind, args = next(iter(spec.items()))
            if kind != "choice" and (len(args) != 2 or not args[0] < args[1]):
                raise ValueError(f"{key}: {kind} needs [low, high] with low < high")
            if kind == "loguniform" and args[0] <= 0:
                raise ValueError(f"{key}: loguniform needs low > 0")
            if kind == "choice" and not args:
                raise ValueError(f"{key}: choice needs at least one value")
        return value


class Params(_Section):
    """The whole of ``params.yaml``."""

    seed: int = 0
    paths: PathsConfig = Field(default_factory=PathsConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)

    def model_config_for(self, name: str) -> ModelConfig:
        """Settings of model ``name`` as configured (defaults when ``models`` does not list
        it). The effective constructor options, with ``benchmark.residual`` filled in for a
        learned model, are :func:`crfm_bench.engine.build.model_options`."""
        return self.models.get(name, ModelConfig())


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override (value parsed as YAML) to a nested dict in place."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"-S {assignment!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"-S {assignment!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "(top level)"
    idx = [str(p) for p in first["loc"] if isinstance(p, int)]
    if idx:
        loc += f"[{','.join(idx)}]"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{extra}"


def load_params(
    path: str | Path | None = "params.yaml", overrides: list[str] | None = None
) -> Params:
    """Load, override and validate ``params.yaml``. ``path=None`` starts from the defaults."""
    tree: dict[str, Any] = {}
    source = "params"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise MissingInputError(f"{path}: parameters file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise InputError(f"{path}: malformed YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(f"{path}: top level must be a mapping of sections")
        tree = loaded
    for assignment in overrides or []:
        apply_override(tree, assignment)
    try:
        return Params.model_validate(tree)
    except ValidationError as err:
        raise InputError(_format_validation_error(err, source)) from None


def dump_params(params: Params) -> str:
    """YAML text of ``params`` (all keys, defaults included)."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
